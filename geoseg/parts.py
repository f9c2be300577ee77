"""Staging folders and the parts in them: what block and reduction tasks write on the workers, and what the
assembly tasks turn into the final files.

Each output of a run has one staging folder beside it (same filesystem, so the final rename is atomic), named
by :func:`geoseg.tempfiles.temp_name` after the driver: a killed run's folder is removed by the next run. Only
the driver creates it; tasks write into it and never create folders, so a task that outlives its run (its
client gone, the folder removed) fails instead of leaving files behind. Every part has a name fixed by what it
holds (a block's origin, a fragment's block and index, a group's first fragment) and is written to a private
name, then renamed: a task retried after its worker died writes the same part again, or finds it in place.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable
from xml.etree import ElementTree as ET

import numpy as np
import rasterio
import shapely
from rasterio.windows import Window

from geoseg.errors import OutputError
from geoseg.grid import Grid
from geoseg.styles import ClassPalette
from geoseg.tempfiles import atomic_path, temp_name
from geoseg.vectorize.instances import ObjectCrop
from geoseg.vectorize.spill import ARRAYS_SUFFIX, read_arrays, write_arrays

FRAGMENTS, CELLS, VECTORS = "frag", "cell", "vec"  # subfolders of a vector output's staging folder
PROBE_NAME = "probe"
GDAL_TYPES = {"uint8": "Byte", "float32": "Float32"}


def staging_name(path: Path) -> Path:
    """A new staging folder's name for the output ``path``: ``.NAME.tmp-<owner>.<random>.stage<ext>``."""
    return temp_name(path).with_suffix(f".stage{path.suffix}")


def make_staging(folder: Path, subfolders: tuple[str, ...] = ()) -> Path:
    """Create the staging folder ``folder`` (driver only; named by :func:`staging_name` beforehand, so that a
    Ctrl-C landing between the name and the folder still knows what to remove)."""
    try:
        folder.mkdir()
        for sub in subfolders:
            (folder / sub).mkdir()
    except OSError as err:
        raise OutputError(f"{folder.parent}: cannot write in the output folder ({err.strerror}); choose another "
                          "output path") from None
    return folder


def remove_staging(folder: Path, tries: int = 20) -> None:
    """Remove a staging folder; retried for a while because a task of a stopped run may still be writing a part
    into it (once the folder is gone, such a task fails instead)."""
    for attempt in range(tries):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.05 * (attempt + 1))


def write_once(path: Path, write: Callable[[Path], None]) -> bool:
    """Write ``path`` through ``write(tmp)`` and rename it into place, unless it is already there (a retried
    task); returns whether it wrote."""
    if path.exists():
        return False
    with atomic_path(path) as tmp:
        write(tmp)
    return True


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    return write_once(path, lambda tmp: write_arrays(tmp, arrays))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    return read_arrays(path)


# --- raster parts -------------------------------------------------------------------------------------------

def raster_part_name(window: Window) -> str:
    return f"r{int(window.row_off):07d}_c{int(window.col_off):07d}.tif"


def write_raster_part(folder: Path, window: Window, data: np.ndarray, grid: Grid, nodata: float) -> None:
    """One block (``window`` of the scene's ``grid``) of a scene raster as a small GeoTIFF (the COG is compressed
    later): class codes through ZSTD's fastest level, probabilities raw, where a codec shrinks them little for
    the CPU it costs, writing here and reading back in the assembly."""
    data = data if data.ndim == 3 else data[None]
    part = grid.window(window)
    codec = {"compress": "ZSTD", "ZSTD_LEVEL": 1} if data.dtype.kind in "iub" else {}

    def write(tmp: Path) -> None:
        with rasterio.open(tmp, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                           dtype=data.dtype, crs=part.crs, transform=part.transform,
                           nodata=nodata, tiled=True, blockxsize=256, blockysize=256, **codec) as dst:
            dst.write(data)

    write_once(folder / raster_part_name(window), write)


def build_vrt(folder: Path, windows: Iterable[Window], grid: Grid, dtype: str, count: int, nodata: float,
              descriptions: tuple[str, ...] = (), palette: ClassPalette | None = None) -> Path:
    """A VRT mosaic on ``grid`` of the raster parts in ``folder`` (GDAL reads it window by window, like one
    raster)."""
    root = ET.Element("VRTDataset", rasterXSize=str(grid.width), rasterYSize=str(grid.height))
    ET.SubElement(root, "SRS").text = rasterio.crs.CRS.from_user_input(grid.crs).to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in grid.transform.to_gdal())
    for band in range(1, count + 1):
        b = ET.SubElement(root, "VRTRasterBand", dataType=GDAL_TYPES[dtype], band=str(band))
        ET.SubElement(b, "NoDataValue").text = repr(float(nodata))
        if band <= len(descriptions):
            ET.SubElement(b, "Description").text = descriptions[band - 1]
        if palette is not None and band == 1:
            ET.SubElement(b, "ColorInterp").text = "Palette"
            table = ET.SubElement(b, "ColorTable")
            for i in range(256):  # as a TIFF colour map reads back: RGB, alpha 255
                r, g, bl, _ = palette.colormap.get(i, (0, 0, 0, 0))
                ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(bl), c4="255")
        for w in windows:
            src = ET.SubElement(b, "SimpleSource")
            ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = raster_part_name(w)
            ET.SubElement(src, "SourceBand").text = str(band)
            ET.SubElement(src, "SourceProperties", RasterXSize=str(int(w.width)), RasterYSize=str(int(w.height)),
                          DataType=GDAL_TYPES[dtype], BlockXSize="256", BlockYSize="256")
            ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(int(w.width)), ySize=str(int(w.height)))
            ET.SubElement(src, "DstRect", xOff=str(int(w.col_off)), yOff=str(int(w.row_off)),
                          xSize=str(int(w.width)), ySize=str(int(w.height)))
    path = folder / "mosaic.vrt"
    ET.ElementTree(root).write(path)
    return path


# --- vector parts: finished features as WKB and plain columns ---------------------------------------------------

def save_frames(path: Path, frames: dict[str, list[object]]) -> bool:
    """Finished frames per layer as WKB plus columns in one array-set file (what the GeoPackage writer is handed
    anyway: the assembly does no geometry work). Written even when empty: it marks the task done."""
    arrays: dict[str, np.ndarray] = {}
    for layer, parts in frames.items():
        parts = [f for f in parts if len(f)]  # type: ignore[arg-type]
        if not parts:
            continue
        wkb = shapely.to_wkb(np.concatenate([f.geometry.values for f in parts]))  # type: ignore[attr-defined]
        arrays[f"{layer}:wkb"] = np.frombuffer(b"".join(wkb), np.uint8)
        arrays[f"{layer}:end"] = np.cumsum([len(g) for g in wkb], dtype=np.int64)
        for col in parts[0].columns:  # type: ignore[attr-defined]
            if col != "geometry":
                values = np.concatenate([np.asarray(f[col]) for f in parts])  # type: ignore[index]
                arrays[f"{layer}:col:{col}"] = values.astype(str) if values.dtype == object else values
    return save_arrays(path, arrays)


def load_frames(path: Path) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """``{layer: (WKB object array, {column: values})}`` of a vector part."""
    arrays = load_arrays(path)
    out: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for key in arrays:
        if key.endswith(":wkb"):
            layer = key[:-4]
            buf, ends = arrays[key].tobytes(), arrays[f"{layer}:end"]
            starts = np.concatenate([[0], ends[:-1]])
            wkb = np.array([buf[a:b] for a, b in zip(starts.tolist(), ends.tolist())], dtype=object)
            prefix = f"{layer}:col:"
            cols = {k[len(prefix):]: v.astype(object) if v.dtype.kind == "U" else v for k, v in arrays.items()
                    if k.startswith(prefix)}
            out[layer] = (wkb, cols)
    return out


# --- frontier parts: object fragments and network cell shares ---------------------------------------------------

def fragment_name(k: int, block: tuple[int, int], n: int) -> str:
    return f"k{k}_{block[0]}_{block[1]}_{n}{ARRAYS_SUFFIX}"


def save_fragment(path: Path, crop: ObjectCrop) -> None:
    origin = [int(crop.window.row_off), int(crop.window.col_off)]
    save_arrays(path, {"origin": np.array(origin, np.int64), "mask": crop.mask, "prob": crop.prob,
                       **{f"head_{k}": v for k, v in crop.heads.items()}})


def load_fragment(path: Path) -> ObjectCrop:
    arrays = load_arrays(path)
    row0, col0 = arrays.pop("origin").tolist()
    mask = arrays.pop("mask")
    return ObjectCrop(Window(col0, row0, mask.shape[1], mask.shape[0]), mask, arrays.pop("prob"),
                      {k.removeprefix("head_"): v for k, v in arrays.items()})


def cell_part_name(k: int, cell: tuple[int, int], block: tuple[int, int]) -> str:
    return f"k{k}_{cell[0]}_{cell[1]}_b{block[0]}_{block[1]}{ARRAYS_SUFFIX}"


def save_cell_part(path: Path, window: Window, bits: np.ndarray, values: np.ndarray) -> None:
    """A block's share (``window`` of the scene) of a network cell, as :class:`geoseg.vectorize.blocks.CellPart`
    packs it: mask as bits, probabilities (float16) at mask pixels only."""
    origin = [int(window.row_off), int(window.col_off), int(window.height), int(window.width)]
    save_arrays(path, {"origin": np.array(origin, np.int64), "bits": bits, "values": values})


def load_cell_part(path: Path) -> tuple[Window, np.ndarray, np.ndarray]:
    arrays = load_arrays(path)
    row0, col0, h, w = arrays["origin"].tolist()
    mask = np.unpackbits(arrays["bits"], count=h * w).reshape(h, w).astype(bool)
    prob = np.zeros((h, w), np.float32)
    prob[mask] = arrays["values"]
    return Window(col0, row0, w, h), mask, prob


# --- the workers must see the staging folders -----------------------------------------------------------------

def check_workers_see(client: Any, folders: list[Path]) -> None:
    """Fail with one line unless every worker of ``client`` sees ``folders`` (with what the driver wrote there):
    tasks write the parts beside the outputs, so a remote cluster needs the outputs on storage every worker
    mounts at the same path."""
    if not folders:
        return
    token = uuid.uuid4().hex
    for folder in folders:
        (folder / PROBE_NAME).write_text(token)
    try:
        # a worker that cannot be reached (one dying just now) is the scheduler's business, not a blind one
        seen = client.run(workers_see, [str(f) for f in folders], token, on_error="return")
    finally:
        for folder in folders:
            (folder / PROBE_NAME).unlink(missing_ok=True)
    blind = sorted(addr for addr, ok in seen.items() if ok is False)
    if blind:
        raise OutputError(f"{folders[0].parent}: the output folder is not visible to Dask worker(s) "
                          f"{', '.join(blind)}; tasks write their parts beside the outputs, so on a remote cluster "
                          "write the outputs to storage every worker mounts at the same path (a shared filesystem)")


def require_folder(folder: Path) -> None:
    """On a worker, before writing parts: a worker that joined after the check and does not see the folder."""
    if not folder.is_dir():
        raise OutputError(f"{folder.parent}: the output folder is not visible to this Dask worker (or the run "
                          "was stopped); on a remote cluster write the outputs to storage every worker mounts at "
                          "the same path (a shared filesystem)")


def workers_see(folders: list[str], token: str) -> bool:
    """On a worker: whether each folder holds the driver's probe token."""
    try:
        return all(Path(f, PROBE_NAME).read_text() == token for f in folders)
    except OSError:
        return False
