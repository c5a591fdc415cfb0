"""What a proxy is: a class registered by name (`register`) that the
engine (engine.py) asks, per model, for its value.

A proxy either reads the graph alone (`init` None: `measure`), or runs the
model with random weights: `init` names the initialisation scheme of its paper
(init.py), and the engine then asks it to `probe` the model (a pass adding the
graph outputs it reads), to give the `feeds` of its runs, and to turn what the
runs fetched into its `value`. Every proxy of a model reads one prepared
graph; each gets its own ONNX Runtime session, with its scheme's weights.

A proxy that does not apply to a model raises NotApplicable with the reason,
which becomes its NaN reason: NaN is a result, never hidden.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_SEED = 0


class NotApplicable(Exception):
    """The proxy cannot be computed for this model; the message is the NaN reason."""


MEASURES = "epsinas_onnx.proxies.measures"  # the package of the proxy modules
TABLE: dict[str, "Proxy"] = {}  # name -> the registered proxy (registry.get reads it)


def register(name: str):
    """Class decorator: register an instance of the decorated Proxy class as
    `name`. ValueError for a name registered twice, or a proxy module named
    otherwise (one proxy per module, named alike)."""

    def decorate(cls):
        if name in TABLE:
            raise ValueError(f"proxy {name!r} is registered twice ({TABLE[name].__class__.__qualname__} "
                             f"and {cls.__qualname__})")
        module = cls.__module__.rpartition(".")[2]
        if cls.__module__.startswith(MEASURES) and module != name:
            raise ValueError(f"proxy {name!r} is registered in module {module!r}: one proxy per module, named alike")
        instance = cls()
        instance.name = name
        TABLE[name] = instance
        return cls

    return decorate


@dataclasses.dataclass(frozen=True)
class ProxyOptions:
    """What every proxy's random draws start from: the weights (init.py) and
    any random input (Zen's Gaussian batches) are drawn from `seed`."""

    seed: int = DEFAULT_SEED


@dataclasses.dataclass(frozen=True)
class Context:
    """What a proxy's runs are fed from: the batch (NCHW images or token ids,
    the first axis the examples), the model input's name, the options."""

    batch: np.ndarray
    input_name: str
    options: ProxyOptions = ProxyOptions()
    examples: int | None = None  # how many examples the batch holds (images: its first axis)

    def images(self, proxy: str) -> np.ndarray:
        """The batch, when it is images (floats, examples first); NotApplicable for token ids."""
        if not np.issubdtype(self.batch.dtype, np.floating):
            raise NotApplicable(f"the model reads {self.batch.dtype.name} token ids; {proxy} is defined for "
                                "image (float) inputs")
        return self.batch

    def rng(self, purpose: str) -> np.random.Generator:
        """A generator for one purpose (a proxy's inputs), the same for every model."""
        import zlib

        return np.random.default_rng([self.options.seed, zlib.crc32(purpose.encode())])


@dataclasses.dataclass
class Probe:
    """The graph outputs a proxy added (names), and what it needs to read them back."""

    outputs: list[str]
    info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Outcome:
    value: float  # NaN is a result; nan_reason says why
    nan_reason: str | None = None

    @classmethod
    def nan(cls, reason: str) -> "Outcome":
        return cls(float("nan"), reason)


class Proxy:
    """Base class of a registered proxy (see the module docstring)."""

    name: str = ""  # set by registry.register
    summary: str = ""  # one line: what it measures, its paper
    init: str | None = None  # the weights its runs need (init.SCHEMES); None: it reads the graph only
    higher_is_better: bool = True  # the direction its paper ranks by

    def settings(self, options: ProxyOptions) -> dict:
        """What the value depends on besides the model and the batch (part of a
        results-store key): the paper's constants this implementation uses."""
        return {"seed": options.seed} if self.init is not None else {}

    # a proxy that reads the graph only
    def measure(self, model, context: Context) -> Outcome:
        raise NotImplementedError

    # a proxy that runs the model
    def probe(self, model) -> Probe:
        """Add the graph outputs this proxy reads (a pass on the prepared model:
        shapes inferred, BatchNormalization on batch statistics; its weights are
        written in afterwards, per session, so a probe must not read their values)."""
        raise NotImplementedError

    def feeds(self, context: Context) -> list[np.ndarray]:
        """The input of each run."""
        raise NotImplementedError

    def value(self, probe: Probe, fetched: list[list[np.ndarray]], context: Context) -> Outcome:
        """The value from each run's fetched outputs (in probe.outputs' order)."""
        raise NotImplementedError
