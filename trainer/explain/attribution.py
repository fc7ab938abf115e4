"""Captum attributions per case: which pixels of the photo and which words of the note
drove a model's triage, and how the attribution splits between the two modalities.

``CasePipeline`` rebuilds one stored model end to end, from photo pixels and note
tokens to logits (the run's frozen text encoder, its image encoder or CLIP, and the
model on top), so attributions reach the raw inputs:

- Integrated Gradients (Captum's ``LayerIntegratedGradients``) on the photo pixels and
  on the text encoder's token embeddings at once, so one completeness delta covers both.
  Baselines: the photo replaced by its own mean colour everywhere (skin tone kept,
  lesion and structure removed), and every word piece of the note replaced by the
  padding token (special tokens kept). The target is the class the tool shows (the
  calibrated prediction, by default the raw argmax); attributions are of the raw
  model's logit for it.
- Occlusion on the photo as a second opinion: a square of the mean colour slid over it;
  the score of a pixel is the mean drop of the target logit when it is hidden.
- Word pieces are merged back to the note's words (scores summed). A model with the
  notes' word n-gram channel has its TF-IDF weights as a third input of Integrated
  Gradients (baseline zero, the note removed); an n-gram's attribution is shared equally
  by the words it covers.

``trainer.explain.loading.load_pipeline`` rebuilds a stored model of a run.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainer.encoders.ngrams import term_spans

HEATMAP_SIDE = 32  # stored heatmaps are average-pooled to at most this side
_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


@dataclass
class Explanation:
    """One model's attributions for one case."""

    target: int  # class index explained (the prediction)
    heatmap_ig: np.ndarray | None  # (side, side) signed IG attribution per pixel, summed over channels
    heatmap_occlusion: np.ndarray | None  # (side, side) mean drop of the target logit when hidden
    words: list[str]
    word_scores: np.ndarray  # (n_words,) signed IG attribution per word
    modality_share: dict[str, float]  # share of |attribution| on "image" and "text"
    delta: float  # IG completeness gap: sum of attributions - (f(input) - f(baseline))


def note_words(note: str) -> list[tuple[str, int, int]]:
    """The note's words and punctuation marks with their character spans."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(note)]


class CasePipeline(nn.Module):
    """A stored model from raw inputs: ``forward(pixels, input_ids, ngram_weights,
    attention_mask, ngram_ids)`` -> logits.

    pixels: (batch, 3, S, S) in [0, 1]; input_ids, attention_mask: (batch, L) of the run's
    text encoder, or of the CLIP tokenizer for the unified model; ngram_ids, ngram_weights:
    (batch, K) the note's word n-grams (read only by a model with that channel).
    """

    def __init__(self, model: nn.Module, text_encoder=None, image_encoder: nn.Module | None = None,
                 parts: dict[str, nn.Module] | None = None, clip: nn.Module | None = None,
                 image_size: int = 64, ngrams=None, clip_tokenizer=None, clip_max_tokens: int = 64):
        super().__init__()
        # The LiT CLIP's Hugging Face tokenizer and token limit (None: the tiny CLIP's own tokenizer).
        self.clip_tokenizer, self.clip_max_tokens = clip_tokenizer, clip_max_tokens
        self.model, self.text_encoder, self.image_encoder, self.clip = model.eval(), text_encoder, image_encoder, clip
        self.parts = nn.ModuleDict(parts or {})  # late fusion: its text_only and image_only
        self.pixels = nn.Identity()  # a layer at the input, for LayerIntegratedGradients
        self.ngram_layer = nn.Identity()  # the same for the note's word n-gram weights
        reader = self.parts["text_only"] if self.parts else model
        # The run's NgramVocabulary, when the model reads the notes' word n-grams.
        self.ngrams = ngrams if getattr(reader, "ngrams", None) is not None else None
        self.image_size = image_size
        self.fixed_text: torch.Tensor | None = None
        self.uses = ("text", "image") if self.parts else tuple(getattr(model, "uses", ("text", "image")))
        if clip is not None:
            from trainer.encoders.image import IMAGENET_MEAN, IMAGENET_STD
            from trainer.models.unified import CLIP_MEAN, CLIP_STD

            # The LiT image tower is an ImageNet-trained timm model; the tiny CLIP uses CLIP's statistics.
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if clip_tokenizer is not None else (CLIP_MEAN, CLIP_STD)
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        for module in (self, getattr(text_encoder, "model", None)):
            for p in module.parameters() if module is not None else ():
                p.requires_grad_(False)
        if text_encoder is not None:
            text_encoder.model.eval()

    @property
    def text_layer(self) -> nn.Module:
        if self.clip_tokenizer is not None:
            return self.clip.text.transformer.get_input_embeddings()
        return self.clip.token_embedding if self.clip is not None else self.text_encoder.model.get_input_embeddings()

    def tokenize(self, note: str) -> dict:
        """input_ids, attention_mask (1, L), pad_id, for each token the index of its note
        word (None for special tokens), and the note's word n-grams: ngram_ids and
        ngram_weights (1, K)."""
        tok = self._tokens(note)
        if self.ngrams is not None:
            ids, weights = self.ngrams.encode([note])
            tok.update(ngram_ids=torch.from_numpy(ids), ngram_weights=torch.from_numpy(weights))
        else:
            tok.update(ngram_ids=torch.zeros((1, 1), dtype=torch.long), ngram_weights=torch.zeros((1, 1)))
        return tok

    def encode_clip_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The CLIP's unit-length note embedding. The LiT text tower gets ``attention_mask``
        as given (its own forward would derive it from the padding ids, so the Integrated
        Gradients path, where only the embeddings move, would end elsewhere than the
        baseline); the tiny CLIP's causal text transformer takes no mask."""
        if self.clip_tokenizer is None:
            return self.clip.encode_text(input_ids, normalize=True)
        text = self.clip.text
        out = text.transformer(input_ids=input_ids, attention_mask=attention_mask)
        return torch.nn.functional.normalize(text.proj(text.pooler(out, attention_mask)), dim=-1)

    def _tokens(self, note: str) -> dict:
        words = note_words(note)
        if self.clip_tokenizer is not None:
            return _hf_tokens(self.clip_tokenizer, self.clip_max_tokens, note, words)
        if self.clip is not None:
            import open_clip

            ids = open_clip.tokenize([note], context_length=self.clip.context_length)
            return {"input_ids": ids, "attention_mask": (ids != 0).long(), "pad_id": 0,
                    "word_ids": _align_clip_pieces(ids[0].tolist(), note, words)}
        if self.text_encoder is None:  # an image-only pipeline: two placeholder tokens, never read
            ids = torch.zeros((1, 2), dtype=torch.long)
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pad_id": 0, "word_ids": [None, None]}
        return _hf_tokens(self.text_encoder.tokenizer, self.text_encoder.max_tokens, note, words)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, ngram_weights: torch.Tensor,
                attention_mask: torch.Tensor, ngram_ids: torch.Tensor) -> torch.Tensor:
        pixels = self.pixels(pixels)
        n = pixels.shape[0]
        batch = {"image_present": torch.ones(n, dtype=torch.bool),
                 "text_present": (attention_mask.sum(1) > 2).expand(n),  # more than the two special tokens
                 "ngram_weights": self.ngram_layer(ngram_weights).expand(n, -1), "ngram_ids": ngram_ids.expand(n, -1)}
        fixed = self.fixed_text  # set while only the photo varies (occlusion): the note is encoded once
        if self.clip is not None:  # unified: the trained CLIP embeds both
            batch["clip_img"] = self.clip.encode_image((pixels - self.mean) / self.std, normalize=True)
            txt = fixed if fixed is not None else self.encode_clip_text(input_ids, attention_mask)
            batch["clip_txt"] = txt.expand(n, -1)
            return self.model(batch)
        if "text" in self.uses:
            hidden = fixed if fixed is not None else self.text_encoder.model(
                input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            batch.update(tokens=hidden.expand(n, -1, -1), mask=attention_mask.bool().expand(n, -1))
        if "image" in self.uses:
            enc = self.image_encoder
            batch["image_tokens"] = enc.tokens(pixels) if hasattr(enc, "tokens") else enc(pixels).unsqueeze(1)
        if self.parts:  # late fusion over the two single-modality models
            batch = {"logp_text": self.parts["text_only"](batch).log_softmax(1),
                     "logp_image": self.parts["image_only"](batch).log_softmax(1)}
        return self.model(batch)


def _hf_tokens(tokenizer, max_length: int, note: str, words) -> dict:
    """A Hugging Face tokenizer's ids with each token's note word (None for special tokens)."""
    enc = tokenizer(note, truncation=True, max_length=max_length, return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")[0].tolist()
    special = enc["input_ids"][0] == torch.tensor(tokenizer.all_special_ids).view(-1, 1)
    word_ids = [None if special[:, i].any() else _word_at(words, a) for i, (a, _) in enumerate(offsets)]
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "pad_id": tokenizer.pad_token_id,
            "word_ids": word_ids}


def _encode_note(pipe: CasePipeline, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if pipe.clip is not None:
        return pipe.encode_clip_text(ids, mask)
    return pipe.text_encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state


def _word_at(words: list[tuple[str, int, int]], offset: int) -> int | None:
    for i, (_, start, end) in enumerate(words):
        if start <= offset < end:
            return i
    return None


def _align_clip_pieces(ids: list[int], note: str, words) -> list[int | None]:
    """Word index of each open_clip BPE token, by walking the lower-cased note."""
    from open_clip.tokenizer import _tokenizer

    text, cursor, out = note.lower(), 0, []
    special = {_tokenizer.encoder["<start_of_text>"], _tokenizer.encoder["<end_of_text>"], 0}
    for t in ids:
        if t in special:
            out.append(None)
            continue
        piece = _tokenizer.decoder.get(t, "").replace("</w>", "")
        piece = bytearray(_tokenizer.byte_decoder[c] for c in piece).decode("utf-8", errors="ignore")
        at = text.find(piece, cursor) if piece else -1
        if at < 0:
            out.append(None)
            continue
        out.append(_word_at(words, at))
        cursor = at + len(piece)
    return out


def _pool(heatmap: np.ndarray) -> np.ndarray:
    side = heatmap.shape[0]
    factor = max(1, side // HEATMAP_SIDE)
    return heatmap.reshape(side // factor, factor, side // factor, factor).mean((1, 3))


@torch.no_grad()
def predict(pipe: CasePipeline, pixels: torch.Tensor, tok: dict) -> torch.Tensor:
    return pipe(pixels, tok["input_ids"], tok["ngram_weights"], tok["attention_mask"], tok["ngram_ids"])[0]


def explain(pipe: CasePipeline, photo: np.ndarray, note: str, target: int | None = None, n_steps: int = 32,
            occlusion: bool = True) -> Explanation:
    """Attributions of one case. photo: uint8 (S, S, 3) at ``pipe.image_size``."""
    from captum.attr import LayerIntegratedGradients

    pixels = torch.from_numpy(np.array(photo, dtype=np.uint8)).permute(2, 0, 1).float().unsqueeze(0) / 255
    tok = pipe.tokenize(note)
    ids, mask = tok["input_ids"], tok["attention_mask"]
    ngram_ids, ngram_w = tok["ngram_ids"], tok["ngram_weights"]
    target = int(predict(pipe, pixels, tok).argmax()) if target is None else int(target)
    base_pixels = pixels.mean((2, 3), keepdim=True).expand_as(pixels).contiguous()
    keep = torch.tensor([w is None for w in tok["word_ids"]])
    base_ids = torch.where(keep, ids[0], torch.full_like(ids[0], tok["pad_id"])).unsqueeze(0)
    use_ngrams = pipe.ngrams is not None
    layers = (([pipe.pixels] if "image" in pipe.uses else []) + ([pipe.text_layer] if "text" in pipe.uses else [])
              + ([pipe.ngram_layer] if use_ngrams else []))
    with warnings.catch_warnings():  # Captum warns that layers may depend on each other; pixels and tokens do not
        warnings.simplefilter("ignore", UserWarning)
        lig = LayerIntegratedGradients(pipe, layers if len(layers) > 1 else layers[0])
    # The baseline is the note removed: its tokens padded and its n-gram weights zero.
    attrs, delta = lig.attribute(inputs=(pixels, ids, ngram_w),
                                 baselines=(base_pixels, base_ids, torch.zeros_like(ngram_w)),
                                 additional_forward_args=(mask, ngram_ids), target=target, n_steps=n_steps,
                                 method="gausslegendre", internal_batch_size=n_steps,
                                 return_convergence_delta=True)
    attrs = list(attrs) if len(layers) > 1 else [attrs]
    image_attr = attrs.pop(0)[0].sum(0).numpy() if "image" in pipe.uses else None  # (S, S)
    text_attr = attrs.pop(0)[0].sum(-1).numpy() if "text" in pipe.uses else None  # (L,)
    ngram_attr = attrs.pop(0)[0].numpy() if use_ngrams else None  # (K,)
    words = note_words(note)
    scores = _word_scores(note, words, tok["word_ids"], text_attr, ngram_ids[0].tolist(), ngram_attr, pipe.ngrams)
    if ngram_attr is not None:
        text_attr = ngram_attr if text_attr is None else np.concatenate([text_attr, ngram_attr])
    mass = {"image": float(np.abs(image_attr).sum()) if image_attr is not None else 0.0,
            "text": float(np.abs(text_attr).sum()) if text_attr is not None else 0.0}
    total = sum(mass.values()) or 1.0
    occ = (_occlusion(pipe, pixels, base_pixels, target, (ids, ngram_w, mask, ngram_ids))
           if occlusion and image_attr is not None else None)
    return Explanation(target, _pool(image_attr) if image_attr is not None else None,
                       _pool(occ) if occ is not None else None, [w for w, _, _ in words], scores,
                       {k: v / total for k, v in mass.items()}, float(delta.abs().max()))


def _word_scores(note: str, words, word_ids: list, text_attr, ngram_ids: list[int], ngram_attr, ngrams
                 ) -> np.ndarray:
    """Attribution per note word: its word pieces' summed, plus each word n-gram's shared
    equally by the words of its occurrences."""
    scores = np.zeros(len(words))
    if text_attr is not None:
        for token, w in enumerate(word_ids[:len(text_attr)]):
            if w is not None:
                scores[w] += text_attr[token]
    if ngram_attr is not None:
        for ngram_id, a in zip(ngram_ids, ngram_attr):
            spans = term_spans(note, ngrams.term(ngram_id)) if ngram_id else []
            for start, _ in spans:
                w = _word_at(words, start)
                if w is not None:
                    scores[w] += a / len(spans)
    return scores


def _occlusion(pipe: CasePipeline, pixels: torch.Tensor, base_pixels: torch.Tensor, target: int,
               note_inputs: tuple) -> np.ndarray:
    """Mean drop of the target logit when a square of the photo is hidden (S, S); the note
    (``note_inputs``: ids, n-gram weights, mask, n-gram ids) is encoded once."""
    from captum.attr import Occlusion

    ids, ngram_w, mask, ngram_ids = note_inputs
    side = pixels.shape[-1]
    window = max(2, side // 4)  # about a lesion: smaller windows leave enough of it visible to change nothing
    with torch.no_grad():
        pipe.fixed_text = _encode_note(pipe, ids, mask) if "text" in pipe.uses else None
    try:
        return Occlusion(lambda px: pipe(px, ids, ngram_w, mask, ngram_ids)).attribute(
            pixels, sliding_window_shapes=(3, window, window), strides=(3, window // 2, window // 2),
            baselines=base_pixels, target=target, perturbations_per_eval=64)[0, 0].numpy()
    finally:
        pipe.fixed_text = None
