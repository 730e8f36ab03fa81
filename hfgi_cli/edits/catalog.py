"""The catalogue: every named edit, its family, the file it needs, what it does and where it is from.

Names are one per edit and short where unambiguous (``gender``, ``bald``, ``eyeglasses``); where two
families have the same attribute, the InterFaceGAN edits keep the plain names (``age``, ``smile``)
and the others take a family prefix (``stit_age``, ``ganspace_smile``, ``gradctrl_age``). The
GANSpace rows are the GANSpace authors' named edits for StyleGAN2 FFHQ (``harskish/ganspace``,
``notebooks/figure_teaser.ipynb``) and cars; HFGI's and e4e's published GANSpace edits keep the
names this tool gave them first (``eyes``, ``lip``, ``beard``...).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .files import EditError
from .ganspace import GanspaceEdit

FAMILIES = ("interfacegan", "ganspace", "stit", "gradctrl", "styleclip")


@dataclass(frozen=True)
class Entry:
    name: str
    family: str
    description: str
    strength_range: tuple[float, float]
    files: tuple[str, ...]
    """Paths inside the directions folder (``interfacegan/age.pt``...)."""
    domain: str = "ffhq"
    ganspace: GanspaceEdit | None = None
    attribute: str | None = None
    """GradCtrl: the classifier head's attribute name."""

    @property
    def source(self) -> str:
        return SOURCES[self.family][0]

    @property
    def licence(self) -> str:
        return SOURCES[self.family][1]


SOURCES = {
    "interfacegan": ("InterFaceGAN directions as HFGI / e4e publish them (Tengfei-Wang/HFGI)", "MIT"),
    "ganspace": ("GANSpace PCA (Tengfei-Wang/HFGI ganspace_pca), edits named by harskish/ganspace", "Apache-2.0"),
    "stit": ("STIT W directions (rotemtzaban/STIT editings/w_directions)", "MIT"),
    "gradctrl": ("GradCtrl classifiers on W (zikuncshelly/GradCtrl)", "MIT"),
    "styleclip": ("StyleCLIP global directions (orpatashnik/StyleCLIP), CLIP ViT-B/32 (OpenAI)", "MIT"),
}

INTERFACEGAN_RANGE = (-3.0, 3.0)
GANSPACE_RANGE = (-1.0, 1.0)  # strength multiplies the listed value; 1 is the authors' edit
STIT_RANGE = (-4.0, 4.0)  # STIT's own examples use factors up to 8, i.e. strengths up to 4 here
GRADCTRL_RANGE = (-1.0, 1.0)
FFHQ_PCA, CARS_PCA = ("ganspace/ffhq_pca.pt",), ("ganspace/cars_pca.pt",)


def pca_files(domain: str) -> tuple[str, ...]:
    """The GANSpace PCA a model of this domain is edited with (named edits and tuples alike)."""
    return CARS_PCA if domain == "cars" else FFHQ_PCA

GRADCTRL_FFHQ = ("gradctrl/model_ffhq.pth", "gradctrl/model_ffhq_params.pkl")
GRADCTRL_CARS = ("gradctrl/model_car.pth", "gradctrl/model_car_params.pkl")

# name: (component, first row, end row, value, what it does)
_GANSPACE_FFHQ = {
    # HFGI's and e4e's published edits, under the names this tool has always used
    "eyes": (54, 7, 8, 20, "eyes opened wider (the GANSpace authors' eye_openness)"),
    "beard": (58, 7, 9, -20, "a beard (HFGI's published edit; trimmed_beard's opposite)"),
    "lip": (34, 10, 11, 20, "lipstick (the GANSpace authors' lipstick)"),
    "white_hair": (57, 7, 10, -24, "white hair"),
    "trimmed_beard": (58, 7, 9, 20, "a trimmed beard, or none"),
    # the rest of the GANSpace authors' FFHQ list
    "frizzy_hair": (31, 2, 6, 20, "frizzier hair"),
    "background_blur": (49, 6, 9, 20, "a blurrier background"),
    "bald": (21, 2, 5, 20, "less hair, balding"),
    "big_smile": (19, 4, 5, 20, "a bigger smile"),
    "caricature_smile": (26, 3, 8, 13, "an exaggerated, caricature smile"),
    "scary_eyes": (33, 6, 8, 20, "wide, staring eyes"),
    "curly_hair": (47, 3, 6, 20, "curlier hair"),
    "dark_bg_shiny_hair": (13, 8, 9, 20, "a darker background and shinier hair"),
    "dark_hair_and_light_pos": (14, 8, 9, 20, "darker hair, light from another side"),
    "dark_hair": (16, 8, 9, 20, "darker hair"),
    "disgusted": (43, 6, 8, -30, "a disgusted expression"),
    "displeased": (36, 4, 7, 20, "a displeased expression"),
    "eye_wrinkles": (28, 6, 8, 20, "wrinkles around the eyes"),
    "eyebrow_thickness": (37, 8, 9, 20, "thicker eyebrows"),
    "face_roundness": (37, 0, 5, 20, "a rounder face"),
    "fearful_eyes": (54, 4, 10, 20, "fearful eyes"),
    "hairline": (21, 4, 5, -20, "the hairline moved"),
    "happy_frizzy_hair": (30, 0, 8, 20, "happier, with frizzy hair"),
    "happy_elderly_lady": (27, 4, 7, 20, "happier and older"),
    "head_angle_up": (11, 1, 4, 20, "the head tilted up"),
    "huge_grin": (28, 4, 6, 20, "a huge grin"),
    "in_awe": (23, 3, 6, -15, "an awed expression"),
    "wide_smile": (23, 3, 6, 20, "a wider smile"),
    "large_jaw": (22, 3, 6, 20, "a larger jaw"),
    "light_lr": (15, 8, 9, 10, "light moved from left to right"),
    "lipstick_and_age": (34, 6, 11, 20, "lipstick, and older"),
    "mascara_vs_beard": (41, 6, 9, 20, "mascara (negative strengths: a beard)"),
    "nose_length": (51, 4, 5, -20, "a longer nose"),
    "elderly_woman": (34, 6, 7, 20, "older, more feminine"),
    "overexposed": (27, 8, 18, 15, "an overexposed photo"),
    "screaming": (35, 3, 7, -15, "screaming"),
    "short_face": (32, 2, 6, -20, "a shorter face"),
    "show_front_teeth": (59, 4, 5, 40, "front teeth shown"),
    "ganspace_smile": (46, 4, 5, -20, "a smile (GANSpace component 46)"),
    "straight_bowl_cut": (20, 4, 5, -20, "straight, bowl-cut hair"),
    "sunlight_in_face": (10, 8, 9, 10, "sunlight on the face"),
    "wrinkles": (20, 6, 7, -18, "wrinkles"),
    "boyishness": (8, 2, 5, 20, "a more boyish look"),
}
_GANSPACE_CARS = {
    "redness": (22, 9, 11, -8, "a redder car"),
    "horizontal_flip": (0, 0, 5, 2, "the car seen from the other side"),
    "add_grass": (41, 9, 11, -18, "grass on the ground"),
    "blocky_shape": (16, 3, 6, 25, "a boxier shape"),
}
_STIT = {
    "gender": "more masculine (negative: more feminine)",
    "eyes_open": "eyes opened wider",
    "mouth_open": "the mouth opened",
    "yaw": "the head turned left or right",
    "pitch": "the head tilted up or down",
    "roll": "the head rolled sideways",
    "nose_ratio": "the nose's width to length",
    "nose_tip": "the nose tip raised or lowered",
    "nose_mouth_distance": "the nose nearer to or further from the mouth",
    "eye_distance": "the eyes further apart",
    "eye_eyebrow_distance": "the eyebrows further from the eyes",
    "eye_ratio": "the eyes' height to width",
    "lip_ratio": "the lips' thickness",
    "mouth_ratio": "the mouth's width to height",
    "stit_age": "older (STIT's age direction)",
    "stit_smile": "a smile (STIT's smile direction)",
}
_GRADCTRL_FFHQ = {
    "eyeglasses": ("eyeglasses", "eyeglasses on (negative: off)"),
    "gradctrl_gender": ("gender", "gender, kept apart from the other attributes"),
    "gradctrl_age": ("age", "older, kept apart from the other attributes"),
    "gradctrl_smile": ("smile", "a smile, kept apart from the other attributes"),
}
_GRADCTRL_CARS = {
    "sky_blue": ("sky_blue", "a bluer sky"),
    "grassground": ("grassground", "grass on the ground"),
    "treesbackground": ("treesbackground", "trees in the background"),
    "hubcap_dense": ("hubcap_dense", "denser hubcaps"),
}


def _build() -> dict[str, Entry]:
    entries: list[Entry] = [
        Entry("age", "interfacegan", "older (negative: younger)", INTERFACEGAN_RANGE, ("interfacegan/age.pt",)),
        Entry("smile", "interfacegan", "a smile (negative: none)", INTERFACEGAN_RANGE, ("interfacegan/smile.pt",)),
        Entry("pose", "interfacegan", "the head turned", INTERFACEGAN_RANGE, ("interfacegan/pose.pt",)),
    ]
    for table, files, domain in ((_GANSPACE_FFHQ, FFHQ_PCA, "ffhq"), (_GANSPACE_CARS, CARS_PCA, "cars")):
        for name, (component, start, end, value, what) in table.items():
            entries.append(Entry(name, "ganspace", what, GANSPACE_RANGE, files, domain,
                                 ganspace=GanspaceEdit(component, start, end, float(value))))
    for name, what in _STIT.items():
        file = name.removeprefix("stit_")
        entries.append(Entry(name, "stit", what, STIT_RANGE, (f"stit/{file}.npy",)))
    for table, files, domain in ((_GRADCTRL_FFHQ, GRADCTRL_FFHQ, "ffhq"), (_GRADCTRL_CARS, GRADCTRL_CARS, "cars")):
        for name, (attribute, what) in table.items():
            entries.append(Entry(name, "gradctrl", what, GRADCTRL_RANGE, files, domain, attribute=attribute))
    catalog = {e.name: e for e in entries}
    assert len(catalog) == len(entries), "one name per edit"
    return catalog


CATALOG: dict[str, Entry] = _build()
OTHER_NAMES = {"eye_openness": "eyes", "lipstick": "lip", "glasses": "eyeglasses", "old": "age", "young": "age"}
"""Names users may know from elsewhere, for suggestions only (each edit keeps one name)."""


def lookup(name: str, domain: str | None = None) -> Entry:
    """The entry of a name; an unknown one fails with the nearest names."""
    entry = CATALOG.get(name)
    if entry is None:
        raise EditError(f"unknown attribute '{name}'{suggest(name)} (`hfgi edit --list-attrs` lists all)")
    if domain is not None and entry.domain != domain:
        raise EditError(f"'{name}' is an edit for {entry.domain} models; this checkpoint is a {domain} model")
    return entry


def suggest(name: str) -> str:
    """', did you mean: a, b?' or ''."""
    near = difflib.get_close_matches(name.lower(), list(CATALOG), n=3, cutoff=0.6)
    if name.lower() in OTHER_NAMES and OTHER_NAMES[name.lower()] not in near:
        near.insert(0, OTHER_NAMES[name.lower()])
    return f"; did you mean: {', '.join(near)}?" if near else ""
