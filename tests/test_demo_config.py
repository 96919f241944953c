"""What `make demo` (configs/synthetic.yaml) relies on, read from the config as written:
the val/test centre crop keeps the whole synthetic frame, and the demo trains the STM recipe
of configs/ucf101_3cls.yaml."""

from __future__ import annotations

import yaml

from csvr.data.synthetic import SyntheticMotionConfig
from csvr.data.transforms import centre_crop_params
from tests.conftest import REPO


def _config(name: str) -> dict:
    return yaml.safe_load((REPO / "configs" / name).read_text())


def test_demo_centre_crop_keeps_the_whole_frame() -> None:
    # shapes wrap around the frame edges, so their position is uniform: a crop that drops a
    # strip of the frame drops the motion of the videos whose shape sits there
    data = _config("synthetic.yaml")["data"]["init_args"]
    w, h = data["frame_width"], data["frame_height"]
    SyntheticMotionConfig(width=w, height=h)  # a valid size (multiples of 16)
    crop = centre_crop_params(h, w)
    assert (crop.x0, crop.y0, crop.w, crop.h) == (0, 0, w, h)


def test_demo_uses_the_real_video_stm_recipe() -> None:
    demo, real = _config("synthetic.yaml")["model"], _config("ucf101_3cls.yaml")["model"]
    for key in ("stm_norm", "decay_input", "aux_heads", "v_threshold"):
        assert demo["net"]["init_args"].get(key) == real["net"]["init_args"].get(key), key
    assert demo["aux_weight"] == real["aux_weight"] > 0
