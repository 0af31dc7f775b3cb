import numpy as np
import torch

from invgen.pixels import to_signed, to_uint8


def test_uint8_and_signed_tensors_round_trip_exactly_one_image_or_a_batch():
    levels = np.arange(256, dtype=np.uint8)
    batch = np.stack([levels.reshape(16, 16)] * 3, axis=-1)[None].repeat(2, axis=0)  # (2, 16, 16, 3)
    batch.setflags(write=False)  # as PIL's arrays are
    x = to_signed(batch)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0 and x[0, 0, 8, 0] == torch.tensor(128.0) / 127.5 - 1.0
    np.testing.assert_array_equal(to_uint8(x), batch)
    assert to_signed(batch[0]).shape == (3, 16, 16)
    np.testing.assert_array_equal(to_uint8(to_signed(batch[0])), batch[0])


def test_to_uint8_clips_and_rounds_to_the_nearest_level():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.999, 2.0]).reshape(1, 1, 5).expand(3, 1, 5)
    assert to_uint8(x)[0, :, 0].tolist() == [0, 0, 128, 255, 255]  # 0 -> 127.5 rounds half to even: 128
    assert to_uint8(x.half()).dtype == np.uint8
