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

_SAM2_HOME = "https://github.com/facebookresearch/sam2"


_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"


_SAM2_CHECKPOINTS = {
    ModelName.SAM2_TINY: (
        "SAM 2.1 Hiera-T",
        "Segment Anything 2.1, tiny encoder: clicks and tracking through volumes with a "
        "memory of the slices before; the fastest SAM 2.",
        "sam2.1_hiera_tiny.pt",
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        156_008_466,
    ),
    ModelName.SAM2_SMALL: (
        "SAM 2.1 Hiera-S",
        "Segment Anything 2.1, small encoder.",
        "sam2.1_hiera_small.pt",
        "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
        184_416_285,
    ),
    ModelName.SAM2_BASE_PLUS: (
        "SAM 2.1 Hiera-B+",
        "Segment Anything 2.1, base+ encoder.",
        "sam2.1_hiera_base_plus.pt",
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        323_606_802,
    ),
    ModelName.SAM2_LARGE: (
        "SAM 2.1 Hiera-L",
        "Segment Anything 2.1, large encoder. Best masks; wants a GPU.",
        "sam2.1_hiera_large.pt",
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        898_083_611,
    ),
}
"""The official SAM 2.1 checkpoints (Ravi et al. 2024, Apache-2.0), as for SAM; the hashes
are those Hugging Face lists for the same files (facebook/sam2.1-hiera-*). The architecture
has the model's name."""

def _official(checkpoints: dict, url: str, homepage: str) -> dict[ModelName, ModelSpec]:
    """Registry entries of a family's official checkpoints (Apache-2.0; the architecture has
    the model's name): title, description, file, SHA-256 and size by model name."""
    return {
        name: ModelSpec(
            name=name.value,
            title=title,
            architecture=name.value,
            license="Apache-2.0",
            description=description,
            url=url + file,
            sha256=sha256,
            size_bytes=size,
            homepage=homepage,
        )
        for name, (title, description, file, sha256, size) in checkpoints.items()
    }


MODELS: dict[ModelName, ModelSpec] = {
    **_official(_SAM_CHECKPOINTS, _SAM_URL, _SAM_HOME),
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
    **_official(_SAM2_CHECKPOINTS, _SAM2_URL, _SAM2_HOME),
    ModelName.MEDSAM2: ModelSpec(
        name="medsam2",
        title="MedSAM2",
        architecture="sam2.1_hiera_t512",
        license="Apache-2.0 (code); CC-BY-SA-4.0 (weights)",
        description="SAM 2.1 tiny at 512 px, fine-tuned on 3D medical images and medical "
        "videos; tracks through volumes from a box or a mask.",
        url="https://huggingface.co/wanglab/MedSAM2/resolve/"
        "e4a6f35edd7e091619cbc0750f462f1574e23955/MedSAM2_latest.pt",
        sha256="c92743b99f00d078bf32a3afcc38aaa9faf1c1692dffe3eaa7a90938c1991060",
        size_bytes=156_040_129,
        homepage="https://github.com/bowang-lab/MedSAM2",
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
