"""The registered models: where their weights come from, their hashes and licences."""

from __future__ import annotations

from dataclasses import dataclass

from ..enums import ModelName
from ..errors import ModelError


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's weights come from and what they are.

    Exactly one of ``url`` (downloaded into the cache) and ``bundled`` (a file shipped in the
    package's ``sample_data``) is set for a model that is available.
    """

    name: str
    title: str
    architecture: str
    license: str
    description: str
    url: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    bundled: str | None = None
    homepage: str = ""

    @property
    def filename(self) -> str:
        if self.bundled:
            return self.bundled
        if self.url:
            return self.url.rsplit("/", 1)[-1].split("?", 1)[0]
        return f"{self.name}.pt"


_SAM_HOME = "https://github.com/facebookresearch/segment-anything"


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


_SAM_CHECKPOINTS = {
    ModelName.VIT_B: (
        "SAM ViT-B",
        "Segment Anything, base encoder. The practical choice on a CPU.",
        "sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        375_042_383,
    ),
    ModelName.VIT_L: (
        "SAM ViT-L",
        "Segment Anything, large encoder.",
        "sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        1_249_524_607,
    ),
    ModelName.VIT_H: (
        "SAM ViT-H",
        "Segment Anything, huge encoder. Best masks; wants a GPU.",
        "sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        2_564_550_879,
    ),
}
"""The official SAM checkpoints (Kirillov et al. 2023, Apache-2.0): title, description,
file, SHA-256 and size, by model name (the architecture has the same name)."""

MODELS: dict[ModelName, ModelSpec] = {
    **{
        name: ModelSpec(
            name=name.value,
            title=title,
            architecture=name.value,
            license="Apache-2.0",
            description=description,
            url=_SAM_URL + file,
            sha256=sha256,
            size_bytes=size,
            homepage=_SAM_HOME,
        )
        for name, (title, description, file, sha256, size) in _SAM_CHECKPOINTS.items()
    },
    ModelName.MEDSAM: ModelSpec(
        name="medsam",
        title="MedSAM ViT-B",
        architecture="vit_b",
        license="Apache-2.0 (code); see the MedSAM repository for the weights' terms",
        description="SAM ViT-B fine-tuned on CT, MRI, ultrasound, X-ray and more; "
        "trained with box prompts.",
        url="https://zenodo.org/records/10689643/files/medsam_vit_b.pth",
        sha256="34b34b78c1d18cb8c6bf84cf9c00e135d6d6c965699f3c0e31ef1bc9dcb5be74",
        size_bytes=375_049_145,
        homepage="https://github.com/bowang-lab/MedSAM",
    ),
    ModelName.DEMO: ModelSpec(
        name="demo",
        title="napari-active-sam demo",
        architecture="demo",
        license="BSD-3-Clause",
        description="Small SAM-family model trained by this project on generated images; "
        "ships with the plugin, runs offline on a CPU.",
        bundled="demo_model.pt",
    ),
}


def model_names() -> list[str]:
    """Names of every registered model, in registry order."""
    return [name.value for name in MODELS]


def get_spec(name: str) -> ModelSpec:
    """Return the registry entry for ``name``.

    Raises
    ------
    ModelError
        If no model of that name is registered.
    """
    try:
        return MODELS[ModelName(name)]
    except ValueError:
        raise ModelError(
            f"Unknown model {name!r}. Choose one of {', '.join(model_names())}, "
            "or load a local checkpoint with its architecture name."
        ) from None
