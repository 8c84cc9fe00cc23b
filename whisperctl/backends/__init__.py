"""The seam between the decoding policy and what runs the model: a :class:`Backend`.

The policy (:class:`whisperctl.decoding.WindowDecoder`: temperature fallback, silence, language, out-of-memory
halving) asks a backend for four things and never which backend it has:

- :meth:`Backend.encode`: a batch of windows' log-mel features, as :class:`Windows` (the encoder output with them);
- :meth:`Backend.search`: one decoding pass from per-row prompts (:class:`Prompt`), greedy, beam or sampled as
  :class:`SearchOptions` say, returning each row's tokens, no-speech probability and log-probability sum
  (:class:`Found`), all computed the same way whatever the backend;
- :meth:`Backend.first_logits`: the logits after one token (language detection);
- :meth:`Backend.cross_attention`: the alignment heads' cross-attention over forced sequences (word timing).

Two implementations: :class:`~whisperctl.backends.lean.LeanBackend`, whisperctl's own loop over the loaded model's
modules (whisperctl.native's or transformers', any device and float dtype), and
:class:`~whisperctl.backends.generate.GenerateBackend`, transformers' ``generate()`` (``--decoder generate``, and
wherever the lean loop cannot run). :func:`whisperctl.loaded.load` chooses and builds it with the model
(``loaded.backend``); :class:`~whisperctl.decoding.WindowDecoder` takes any other one (``backend=``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Protocol, Sequence


class Prompt(NamedTuple):
    """One row's decoder prompt: ``head`` (<|startofprev|> and the previous text, or nothing), then ``prefix``
    (<|startoftranscript|>, [language, task], [<|notimestamps|>]) for ``language``."""

    head: list[int]
    prefix: list[int]
    language: str | None

    @property
    def tokens(self) -> list[int]:
        return self.head + self.prefix


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """How one decoding pass searches (the policy builds one per pass)."""

    timestamps: bool  # timestamp tokens and their rules
    beam_size: int  # 1: greedy (or sampled, at a temperature above 0)
    temperature: float  # 0: the most likely tokens; above: sampled
    max_new_tokens: int | None  # None: up to the decoder's positions
    min_new_tokens: int  # end-of-text is suppressed before this many tokens (bench's fixed work)
    seed: int  # the user's --seed, for sampled passes
    keys: Sequence[int] | None = None  # per row: a digest of the window's audio, so its draws do not depend on its batch
    stop_loops: bool = False  # end a row once its text is a repetition loop (whisperctl.repetition)


class Found(NamedTuple):
    """One pass's result, row by row."""

    rows: list[list[int]]  # generated tokens (no prompt), ending with end-of-text where the row finished
    no_speech: list[float] | None  # P(<|nospeech|>) at the start-of-transcript position; None without that token
    logprob_sums: list[float]  # the chosen tokens' log-probabilities under the model (before the logit rules)


class Windows:
    """A batch of windows as the backend that encoded it holds it: log-mel features, and the encoder output, computed
    on first need by ``encode`` (a backend that encodes inside its search may hand over the output it computed)."""

    def __init__(self, features: Any, encode: Callable[[Any], Any], hidden: Any = None):
        self.features = features
        self._encode = encode
        self._hidden = hidden

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def hidden(self) -> Any:
        if self._hidden is None:
            self._hidden = self._encode(self.features)
        return self._hidden

    @property
    def encoded(self) -> bool:
        """Whether the encoder output is at hand (no encoder pass needed to read :attr:`hidden`)."""
        return self._hidden is not None

    def remember(self, hidden: Any) -> None:
        """Keep ``hidden`` (the encoder output of these features, computed elsewhere) unless one is kept already."""
        if self._hidden is None:
            self._hidden = hidden

    def rows(self, index: Sequence[int]) -> "Windows":
        """The windows ``index``, in that order (their encoder output too, where it is at hand)."""
        if len(index) == len(self) and list(index) == list(range(len(self))):
            return self
        index = list(index)
        return Windows(self.features[index], self._encode, None if self._hidden is None else self._hidden[index])


class Backend(Protocol):
    """What runs the model for the decoding policy."""

    name: str  # "lean" | "generate": reported as the runtime's decoder

    def encode(self, features: Any) -> Windows: ...

    def search(self, windows: Windows, prompts: Sequence[Prompt], options: SearchOptions, task: str) -> Found: ...

    def first_logits(self, windows: Windows, token: int) -> Any:
        """fp32 logits (rows, vocabulary) of the token after ``token`` alone, for each window."""

    def cross_attention(self, windows: Windows, tokens: Any, heads: Sequence[tuple[int, int]]) -> tuple[Any, Any]:
        """(final hidden states, alignment heads' weights) of one forced pass over ``tokens`` (see
        :meth:`whisperctl.leanloop.LeanDecoder.cross_attention`)."""

    def token_logits(self, states: Any) -> Any:
        """Vocabulary logits of final hidden states that :meth:`cross_attention` returned."""
