"""Post-processing options per class: one value shared by the pipeline schema (which reads it from YAML) and the
vectoriser (which applies it), so the vectoriser does not depend on the pipeline loader."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ConfigDict

# Every config dataclass carries this: pydantic validates YAML against the dataclass's own type hints (lax
# scalars, e.g. 8 for 8.0; lists for tuples) and refuses keys the dataclass does not have. A new field is a
# new key: nothing else to declare.
SCHEMA = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ClassPost:
    """Post-processing for one class's vectors (metres are ground metres, whatever the CRS unit)."""

    __pydantic_config__ = SCHEMA

    min_area_m2: float = 4.0
    simplify_m: float = 0.25
    holes: bool = True               # keep interior rings; False fills them
    instance_split: bool | None = None   # separate touching objects (boundary/distance head, else EDT watershed);
    #                                      default: on for object classes, off for network classes
    split_depth_m: float = 1.0       # EDT watershed: a neck must be this much thinner than both bodies to split
    regularize: bool = False         # right-angle footprints
    regularize_m: float = 1.0        # how far (metres) regularisation may move the outline
    centerlines: bool | None = None  # network class: pieces cut on a global cell grid, plus a centerline layer;
    #                                  default: on for a class named "road"
    cell_m: float = 512.0            # network classes: side of the global cell grid (bounds memory)
    spur_m: float = 8.0              # network classes: dead-end branches shorter than this are pruned
    centerline_m: float = 1.0        # network classes: pixel size the skeleton is traced at (at most; the scene's
    #                                  own pixel when coarser). Well inside a road's width, and a coarser
    #                                  skeleton has fewer pixels to thin


DEFAULT_POST = {"building": ClassPost(min_area_m2=8.0, simplify_m=0.25),
                "road": ClassPost(min_area_m2=20.0, simplify_m=0.5)}


def is_network(name: str, post: ClassPost) -> bool:
    """Roads (by default) are a network: cut on a cell grid, with centerlines, never split or squared."""
    return post.centerlines if post.centerlines is not None else name == "road"
