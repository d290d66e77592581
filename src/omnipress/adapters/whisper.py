"""Whisper (encoder-decoder speech recognition): `WhisperForConditionalGeneration` and the bare `WhisperModel`.

The audio never enters the decoder prompt: the encoder turns 30 s of log-mel features (`input_features`
`(batch, mel bins, 3000)`, 100 frames per second, shorter audio padded with silence) into 1500 states, and every
decoder layer attends to them through cross-attention (`encoder_attn`). So the decoder prompt has no modality spans
(`batch_spans` gives text and padding only), the language model is the decoder, and what an audio-aware method
compresses is the cross-attention cache over the encoder states, of which `audio_encoder_positions` tell how many
hold audio rather than padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..spans import ModalitySpans
from .common import FamilyAdapter, sequence_ids
from .features import FeatureFn, HookHandle, register_output_hook

#: Whisper's feature extractor: 16 kHz audio, one mel frame per 160 samples (10 ms)
SAMPLING_RATE = 16000
HOP_LENGTH = 160


class WhisperAdapter(FamilyAdapter):
    family = "whisper"
    model_classes = ("WhisperForConditionalGeneration", "WhisperModel")
    modalities: ClassVar[tuple[str, ...]] = ("audio",)

    # -- where things live -------------------------------------------------------------------------------------
    @property
    def inner_model(self) -> nn.Module:
        """The bare `WhisperModel` (`encoder` + `decoder`) under the `proj_out` head."""
        return self.model.model if hasattr(self.model, "proj_out") else self.model

    @property
    def language_model(self) -> nn.Module:
        """The text decoder (`WhisperDecoder`, with `.layers`)."""
        return self.inner_model.decoder

    @property
    def is_encoder_decoder(self) -> bool:
        return True

    @property
    def cross_attention_modules(self) -> list[nn.Module]:
        """`encoder_attn` of every decoder layer, in layer order (each has `.layer_idx`)."""
        return [layer.encoder_attn for layer in self.decoder_layers]

    @property
    def num_attention_heads(self) -> int:
        return int(self.text_config.decoder_attention_heads)  # the config maps `num_attention_heads` to the encoder

    @property
    def num_key_value_heads(self) -> int:
        return self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return int(self.text_config.d_model) // self.num_attention_heads

    @property
    def audio_encoder(self) -> nn.Module:
        """The `WhisperEncoder` (convolutions, `layers`, final layer norm)."""
        return self.inner_model.encoder

    @property
    def audio_blocks(self) -> nn.ModuleList:
        return self.audio_encoder.layers

    @property
    def num_encoder_positions(self) -> int:
        """Encoder states per input (1500 for 30 s at 50 per second)."""
        return int(self.config.max_source_positions)

    # -- spans -------------------------------------------------------------------------------------------------
    def batch_spans(
        self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, **model_inputs: Any
    ) -> list[ModalitySpans]:
        """Spans of the decoder prompt: `input_ids` with `attention_mask`, or else `decoder_input_ids` with
        `decoder_attention_mask` (then `attention_mask` is the encoder's frame mask and is ignored). Text and left
        padding only: the audio is in the encoder."""
        ids, mask = _decoder_prompt(input_ids, attention_mask, model_inputs)
        return super().batch_spans(ids, mask)

    def spans(self, input_ids: torch.Tensor | None = None, **model_inputs: Any) -> ModalitySpans:
        ids, mask = _decoder_prompt(input_ids, model_inputs.get("attention_mask"), model_inputs)
        ids = sequence_ids(ids)
        return self.batch_spans(ids.unsqueeze(0), None if mask is None else torch.as_tensor(mask).reshape(1, -1))[0]

    def audio_encoder_positions(
        self,
        *,
        num_samples: int | Sequence[int] | None = None,
        feature_attention_mask: torch.Tensor | None = None,
    ) -> list[int]:
        """Encoder positions that hold audio (not the silence padding up to 30 s), per clip.

        Rule: a clip of `n` samples at 16 kHz fills `L = ceil(n / 160)` mel frames (what `WhisperFeatureExtractor`'s
        `attention_mask` counts, at most 3000); encoder position `j` is centred on mel frame `2j` (both convolutions
        have kernel 3 and padding 1, the second stride 2), so `ceil(L / 2)` positions hold audio: 50 per second,
        at most 1500.

        Parameters
        ----------
        num_samples:
            Length of each clip in 16 kHz samples (an int is one clip).
        feature_attention_mask:
            The feature extractor's `attention_mask` `(clips, 3000)` (`return_attention_mask=True`).
        """
        if (num_samples is None) == (feature_attention_mask is None):
            raise ValueError("give exactly one of num_samples and feature_attention_mask")
        max_frames = 2 * self.num_encoder_positions
        if feature_attention_mask is not None:
            frames = torch.as_tensor(feature_attention_mask).reshape(-1, feature_attention_mask.shape[-1]).sum(-1)
            mel_frames = [int(n) for n in frames]
        else:
            lengths = [num_samples] if isinstance(num_samples, int) else list(num_samples)
            mel_frames = [min(math.ceil(int(n) / HOP_LENGTH), max_frames) for n in lengths]
        return [min((n + 1) // 2, self.num_encoder_positions) for n in mel_frames]

    # -- features ----------------------------------------------------------------------------------------------
    def feature_modules(self) -> dict[str, nn.Module]:
        """The encoder: its `last_hidden_state` `(batch, 1500, d_model)` is what every cross-attention reads."""
        return {"audio": self.audio_encoder}

    def register_feature_hook(self, modality: str, fn: FeatureFn) -> HookHandle:
        """Call `fn` on the encoder states `(batch, 1500, d_model)` (Whisper's own layout: padding positions
        included; `audio_encoder_positions` tells which hold audio), in a forward and inside `generate`, which runs
        the encoder once before decoding. `fn` returns `None` or a replacement of the same shape."""
        if modality != "audio":
            raise ValueError(f"{self.family} has no {modality} features; it accepts: audio")
        return register_output_hook(self.audio_encoder, fn, "whisper encoder states")

    # -- inputs ------------------------------------------------------------------------------------------------
    def build_inputs(self, prompt_ids: Sequence[int], **kwargs: Any) -> dict[str, torch.Tensor]:
        raise ValueError(
            "Whisper inputs are log-mel features from WhisperFeatureExtractor (input_features), not a chat prompt; "
            "see omnipress.testing.tiny_inputs('whisper', model)"
        )


def _decoder_prompt(
    input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, model_inputs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if input_ids is not None:
        return input_ids, attention_mask
    decoder_ids = model_inputs.get("decoder_input_ids")
    if decoder_ids is None:
        raise ValueError("Whisper spans are the decoder prompt's: pass input_ids or decoder_input_ids")
    return decoder_ids, model_inputs.get("decoder_attention_mask")
