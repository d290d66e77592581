"""One left-padded batch from single-prompt model inputs, the way the families' processors build it for `generate`.

```python
batch = collate_inputs(model, [build_inputs(model, tok, text="A?", images=[im]), build_inputs(model, tok, text="B?")])
model.generate(**batch, do_sample=False)
```

- Per-token tensors (`input_ids`, `attention_mask`, Qwen-VL's `mm_token_type_ids`; Whisper's `decoder_input_ids`,
  `decoder_attention_mask`) are left-padded to the longest prompt (pad id, 0, 0) and stacked.
- Media tensors hold the items of all rows in row order: they are concatenated along their first dimension
  (`pixel_values`, `image_grid_thw`, `video_grid_thw`, `pixel_values_videos`, `second_per_grid_ts`, `image_sizes`,
  `batch_num_images`, `input_features`, `feature_attention_mask`, ...). LLaVA-OneVision's image `pixel_values`
  `(images, patches, 3, H, W)` are zero-padded on the patch dimension to the largest patch count first, as its image
  processor pads a batch.
- Other values (`use_audio_in_video`) must agree across the prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .base import ModelAdapter

#: per-token tensors and their padding value (`None`: the pad token id)
TOKEN_INPUTS: dict[str, int | None] = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": 0}
ENCODER_DECODER_TOKEN_INPUTS: dict[str, int | None] = {"decoder_input_ids": None, "decoder_attention_mask": 0}
#: media tensors whose second dimension may differ between prompts and is zero-padded (LLaVA-OneVision anyres patches)
PADDED_MEDIA_INPUTS = ("pixel_values",)


def collate_inputs(
    model_or_adapter: nn.Module | ModelAdapter,
    inputs_list: Sequence[Mapping[str, Any]],
    pad_token_id: int | None = None,
) -> dict[str, Any]:
    """Collate single-prompt inputs (as `omnipress.generation.build_inputs` returns) into one left-padded batch.

    Parameters
    ----------
    model_or_adapter:
        The model (or its adapter) the inputs are for.
    inputs_list:
        One dict per prompt, per-token tensors `(1, seq)` (or `(rows, seq)`), media tensors with the prompt's items.
    pad_token_id:
        Id written in the padding columns of `input_ids`; default: the model's generation config, then its config.

    Returns
    -------
    dict
        `input_ids` / `attention_mask` `(batch, longest)` and every other input collated, ready for
        `model.generate(**batch)` (left padding) and `adapter.batch_spans(**batch)`.

    Raises
    ------
    ValueError
        For an empty list, no pad id, media tensors that cannot be concatenated (e.g. LLaVA-OneVision videos with
        different frame counts), or non-tensor values that differ between prompts.
    """
    from . import get_adapter

    if not inputs_list:
        raise ValueError("collate_inputs needs at least one prompt's inputs")
    adapter = model_or_adapter if isinstance(model_or_adapter, ModelAdapter) else get_adapter(model_or_adapter)
    token_inputs = ENCODER_DECODER_TOKEN_INPUTS if adapter.is_encoder_decoder else TOKEN_INPUTS
    pad_id = (
        _pad_token_id(adapter, pad_token_id)
        if any(k in inputs for inputs in inputs_list for k in token_inputs if token_inputs[k] is None)
        else 0
    )

    names: list[str] = []
    for inputs in inputs_list:
        names += [name for name in inputs if name not in names]
    mask_name = "decoder_attention_mask" if adapter.is_encoder_decoder else "attention_mask"
    ids_name = "decoder_input_ids" if adapter.is_encoder_decoder else "input_ids"
    if ids_name in names and mask_name not in names:
        names.insert(names.index(ids_name) + 1, mask_name)

    batch: dict[str, Any] = {}
    for name in names:
        if name in token_inputs:
            batch[name] = _left_pad(name, inputs_list, token_inputs, pad_id, ids_name)
            continue
        values = [inputs[name] for inputs in inputs_list if name in inputs]
        if all(isinstance(v, torch.Tensor) for v in values):
            batch[name] = _concat_media(name, values)
        elif any(isinstance(v, torch.Tensor) for v in values):
            raise ValueError(f"{name} is a tensor in some prompts' inputs and not in others")
        else:
            if any(v != values[0] for v in values[1:]):
                raise ValueError(f"{name} differs between the prompts ({values}); it is one value for the batch")
            batch[name] = values[0]
    return batch


def _pad_token_id(adapter: ModelAdapter, pad_token_id: int | None) -> int:
    if pad_token_id is not None:
        return int(pad_token_id)
    model = getattr(adapter, "generation_model", adapter.model)
    sources = [getattr(model, "generation_config", None), getattr(model, "config", None), adapter.text_config]
    for source in sources:
        value = getattr(source, "pad_token_id", None)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    raise ValueError(f"{type(adapter.model).__name__} defines no pad_token_id: pass pad_token_id to collate_inputs")


def _left_pad(
    name: str,
    inputs_list: Sequence[Mapping[str, Any]],
    token_inputs: dict[str, int | None],
    pad_id: int,
    ids_name: str,
) -> torch.Tensor:
    """`name` of every prompt left-padded to the longest and stacked, `(batch, longest)`."""
    rows: list[torch.Tensor] = []
    for index, inputs in enumerate(inputs_list):
        value = inputs.get(name)
        if value is None:
            ids = inputs.get(ids_name)
            if name.endswith("attention_mask") and ids is not None:
                value = torch.ones_like(torch.as_tensor(ids))  # an unpadded prompt
            else:
                raise ValueError(f"prompt {index} has no {name} but other prompts have one")
        value = torch.as_tensor(value)
        rows.append(value.unsqueeze(0) if value.dim() == 1 else value)
    longest = max(int(r.shape[-1]) for r in rows)
    fill = pad_id if token_inputs[name] is None else token_inputs[name]
    padded = [torch.nn.functional.pad(r, (longest - int(r.shape[-1]), 0), value=fill) for r in rows]
    return torch.cat(padded, dim=0)  # (batch, longest)


def _concat_media(name: str, values: list[torch.Tensor]) -> torch.Tensor:
    """Media tensors of all prompts concatenated along dim 0 (items of all rows, in row order)."""
    if name in PADDED_MEDIA_INPUTS and all(v.dim() == 5 for v in values):
        # LLaVA-OneVision anyres: (images, patches, 3, H, W); pad the patch dimension with zeros
        most = max(int(v.shape[1]) for v in values)
        values = [torch.nn.functional.pad(v, (0, 0, 0, 0, 0, 0, 0, most - int(v.shape[1]))) for v in values]
    shapes = {tuple(v.shape[1:]) for v in values}
    if len(shapes) > 1:
        raise ValueError(
            f"{name} of the prompts cannot be concatenated: item shapes {sorted(shapes)} differ (e.g. LLaVA-OneVision "
            "videos in one batch need the same number of frames and frame size)"
        )
    return torch.cat([v.reshape(-1) if v.dim() == 0 else v for v in values], dim=0)
