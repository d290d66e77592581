"""Qwen2-Audio and the Qwen2.5-Omni thinker.

Audio layout (ids read from the config): `<|audio_bos|> <|AUDIO|> × n <|audio_eos|>` per clip, where
`n = audio_token_count(L)` for `L` valid mel frames (`feature_attention_mask.sum(-1)`): 25 tokens per second.
`batch_spans` gives one audio span per clip (`Span.item` = clip index in its row).

Qwen2.5-Omni also takes images and video with the Qwen2-VL layout (M-RoPE positions). With `use_audio_in_video=True`
the processor interleaves each video's audio with its frames in 2-second chunks inside one
`<vision_bos><audio_bos> … <audio_eos><vision_eos>` block. `batch_spans` handles that layout too: every video frame
group stays contiguous (one span each) and a clip cut into chunks yields one audio span per chunk, all with the same
`item`. `Qwen2_5OmniAdapter.build_audio_video_inputs` builds that layout.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .common import FamilyAdapter, MediaItems, audio_token_count, expand_placeholders
from .qwen_vl import QwenVisionAdapter, _text_positions

AUDIO_INPUT_NAMES = ("feature_attention_mask", "audio_feature_lengths")


def audio_items(model_inputs: dict[str, Any]) -> MediaItems | None:
    """One group per clip from `feature_attention_mask` `(clips of all rows, frames)` (or Omni's
    `audio_feature_lengths` `(clips,)`): `audio_token_count` of its valid mel frames."""
    mask = model_inputs.get("feature_attention_mask")
    if mask is not None:
        mask = torch.as_tensor(mask)
        lengths, source = mask.reshape(-1, mask.shape[-1]).sum(-1).tolist(), "feature_attention_mask"
    elif model_inputs.get("audio_feature_lengths") is not None:
        lengths = torch.as_tensor(model_inputs["audio_feature_lengths"]).reshape(-1).tolist()
        source = "audio_feature_lengths"
    else:
        return None
    return MediaItems([[audio_token_count(int(n))] for n in lengths], source)


def audio_groups(model_inputs: dict[str, Any], ids: torch.Tensor, audio_id: int) -> list[list[int]]:
    """Audio token count per clip (`audio_items(model_inputs).groups`); `[]` without audio inputs, an error when
    `ids` hold audio placeholders anyway. Kept for callers of earlier versions; `batch_spans` uses `audio_items`."""
    items = audio_items(model_inputs)
    if items is not None:
        return items.groups
    if bool((ids == audio_id).any()):
        raise ValueError(
            f"input_ids hold audio placeholder tokens (id {audio_id}) but neither feature_attention_mask nor "
            "audio_feature_lengths was given"
        )
    return []


def audio_features(
    clips: list[np.ndarray], feature_extractor: Any, num_mel_bins: int
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Whisper log-mel features padded to the extractor's window, their frame mask and the token count per clip
    (what `Qwen2AudioProcessor` returns)."""
    if feature_extractor is None:
        from transformers import WhisperFeatureExtractor

        feature_extractor = WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=16000)
    encoded = feature_extractor(
        clips, sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="pt"
    )
    mask = encoded["attention_mask"]
    counts = [audio_token_count(int(n)) for n in mask.sum(-1)]
    return encoded["input_features"], mask, counts


class Qwen2AudioAdapter(FamilyAdapter):
    family = "qwen2_audio"
    model_classes = ("Qwen2AudioForConditionalGeneration", "Qwen2AudioModel")
    modalities: ClassVar[tuple[str, ...]] = ("audio",)

    @property
    def modality_token_ids(self) -> dict[str, int]:
        return {"audio": self.config_token_id("audio_token_id", "audio_token_index")}

    media_input_names: ClassVar[dict[str, tuple[str, ...]]] = {"audio": AUDIO_INPUT_NAMES}

    def media_items(self, modality: str, model_inputs: dict[str, Any]) -> MediaItems | None:
        return audio_items(model_inputs) if modality == "audio" else None

    @property
    def audio_encoder(self) -> nn.Module:
        """The Whisper-style `audio_tower` (`Qwen2AudioEncoder`)."""
        return self.inner_model.audio_tower

    @property
    def audio_blocks(self) -> nn.ModuleList:
        return self.audio_encoder.layers

    def feature_modules(self) -> dict[str, nn.Module]:
        """The `multi_modal_projector`: its `(clips, frames, hidden)` output, cut to each clip's valid frames, is the
        audio features."""
        return {"audio": self.inner_model.multi_modal_projector}

    def add_audio(self, ids, clips, feature_extractor):
        features, mask, counts = audio_features(clips, feature_extractor, self.config.audio_config.num_mel_bins)
        audio_id = self.modality_token_ids["audio"]
        ids = expand_placeholders(ids, audio_id, [[audio_id] * n for n in counts], modality="audio")
        return ids, {"input_features": features, "feature_attention_mask": mask}


class Qwen2_5OmniAdapter(QwenVisionAdapter):
    """The Qwen2.5-Omni thinker; the full `Qwen2_5OmniForConditionalGeneration` is handled through its thinker."""

    family = "qwen2_5_omni"
    model_classes = (
        "Qwen2_5OmniThinkerForConditionalGeneration",
        "Qwen2_5OmniThinkerModel",
        "Qwen2_5OmniForConditionalGeneration",
    )
    modalities: ClassVar[tuple[str, ...]] = ("image", "video", "audio")

    @property
    def thinker(self) -> nn.Module:
        """The thinker (`Qwen2_5OmniThinkerForConditionalGeneration` or the bare thinker model)."""
        return self.model.thinker if hasattr(self.model, "thinker") else self.model

    @property
    def generation_model(self) -> nn.Module:
        return self.thinker

    @property
    def config(self) -> Any:
        return self.thinker.config

    @property
    def inner_model(self) -> nn.Module:
        thinker = self.thinker
        return thinker.model if hasattr(thinker, "lm_head") else thinker

    @property
    def modality_token_ids(self) -> dict[str, int]:
        return {
            "image": self.config_token_id("image_token_id", "image_token_index"),
            "video": self.config_token_id("video_token_id", "video_token_index"),
            "audio": self.config_token_id("audio_token_id", "audio_token_index"),
        }

    media_input_names: ClassVar[dict[str, tuple[str, ...]]] = {
        **QwenVisionAdapter.media_input_names,
        "audio": AUDIO_INPUT_NAMES,
    }
    interleaved_modalities: ClassVar[tuple[str, ...]] = ("audio",)

    def media_items(self, modality: str, model_inputs: dict[str, Any]) -> MediaItems | None:
        return audio_items(model_inputs) if modality == "audio" else super().media_items(modality, model_inputs)

    @property
    def audio_encoder(self) -> nn.Module:
        """The `audio_tower` (`Qwen2_5OmniAudioEncoder`, its output projection included)."""
        return self.inner_model.audio_tower

    @property
    def audio_blocks(self) -> nn.ModuleList:
        return self.audio_encoder.layers

    def feature_modules(self) -> dict[str, nn.Module]:
        """The vision `merger` (image and video) and the audio tower's output projection `proj`."""
        return {**super().feature_modules(), "audio": self.audio_encoder.proj}

    def rope_index(self, input_ids: torch.Tensor, model_inputs: dict[str, Any]) -> tuple[torch.Tensor, int]:
        feature_mask = model_inputs.get("feature_attention_mask")
        image_grid, video_grid = model_inputs.get("image_grid_thw"), model_inputs.get("video_grid_thw")
        if image_grid is None and video_grid is None and feature_mask is None:
            return _text_positions(input_ids, self.modality_token_ids)
        # as the thinker's forward: audio lengths from the feature mask, an all-ones attention mask
        positions, deltas = self.inner_model.get_rope_index(
            input_ids,
            image_grid,
            video_grid,
            torch.ones_like(input_ids),
            bool(model_inputs.get("use_audio_in_video") or False),
            None if feature_mask is None else torch.as_tensor(feature_mask).sum(-1),
            model_inputs.get("video_second_per_grid"),
        )
        return positions, int(deltas.reshape(-1)[0])

    def add_video(self, ids, frames, timestamps, size, tokenizer):
        ids, tensors = super().add_video(ids, frames, timestamps, size, tokenizer)
        tensors["video_second_per_grid"] = torch.tensor([self.seconds_per_grid(timestamps)])
        return ids, tensors

    def add_audio(self, ids, clips, feature_extractor):
        features, mask, counts = audio_features(clips, feature_extractor, self.config.audio_config.num_mel_bins)
        audio_id = self.modality_token_ids["audio"]
        ids = expand_placeholders(ids, audio_id, [[audio_id] * n for n in counts], modality="audio")
        return ids, {"input_features": features, "feature_attention_mask": mask}

    def build_audio_video_inputs(
        self,
        prompt_ids: list[int],
        frames: list,
        timestamps: list[float],
        clip: np.ndarray,
        *,
        video_size: tuple[int, int] | None = None,
        feature_extractor: Any = None,
    ) -> dict[str, Any]:
        """Inputs for one video whose sound track `clip` (16 kHz mono) is interleaved with its frames
        (`use_audio_in_video=True`), as `Qwen2_5OmniProcessor` lays it out.

        The prompt holds the video placeholder once (`<vision_bos><|VIDEO|><vision_eos>`). Frame groups and audio
        tokens are placed by their M-RoPE time position (`position_id_per_seconds` per second) and cut into
        `seconds_per_chunk` chunks; chunk by chunk, the video tokens come first, then the audio tokens, all inside
        `<audio_bos> … <audio_eos>`.
        """
        patches, grid = self.video_tensors(list(frames), video_size)
        features, mask, counts = audio_features([clip], feature_extractor, self.config.audio_config.num_mel_bins)
        per_second = float(self.config.position_id_per_seconds)
        chunk = int(per_second * self.config.seconds_per_chunk)
        seconds = self.seconds_per_grid(list(timestamps))
        grid_t, grid_h, grid_w = (int(v) for v in grid[0])
        per_frame = grid_h * grid_w // self.merge_size**2
        video_times = [int(k * seconds * per_second) for k in range(grid_t) for _ in range(per_frame)]
        video_chunks = chunk_lengths(video_times, chunk)
        audio_chunks = chunk_lengths(list(range(counts[0])), chunk)
        tokens = self.modality_token_ids
        block = [self.config_token_id("audio_start_token_id")]
        for j in range(max(len(video_chunks), len(audio_chunks))):
            block += [tokens["video"]] * (video_chunks[j] if j < len(video_chunks) else 0)
            block += [tokens["audio"]] * (audio_chunks[j] if j < len(audio_chunks) else 0)
        block.append(self.config_token_id("audio_end_token_id"))
        ids = expand_placeholders(prompt_ids, tokens["video"], [block], modality="video")
        input_ids = torch.tensor([ids], dtype=torch.long)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values_videos": patches,
            "video_grid_thw": grid,
            "video_second_per_grid": torch.tensor([seconds]),
            "input_features": features,
            "feature_attention_mask": mask,
            "use_audio_in_video": True,
        }


def chunk_lengths(times: list[int], chunk: int) -> list[int]:
    """Token counts of consecutive time chunks of `chunk` positions each, for non-decreasing `times`.

    Follows the Qwen2.5-Omni processor and `get_rope_index` exactly: a boundary is crossed at most once per token,
    so a token that jumps several chunks ahead closes only the current one.
    """
    bounds: list[int] = []
    start, current = 0, 1
    for i, t in enumerate(times):
        if t >= current * chunk:
            bounds.append(i - start)
            start, current = i, current + 1
    bounds.append(len(times) - start)
    return bounds
