"""Per-agent behaviour baselines, learned online, and what falls outside them.

Each agent kind gets a baseline of what one of its steps does: how many tool calls, how many of them privileged
(a write or an irreversible tool), how many model tokens, how long, whether it failed, and which tools it calls
after which (its tool mix, as transitions from a start marker). The baselines are river's streaming statistics
(`river.stats.Mean`, `Var` and `EWMean`): constant memory and time per step, nothing stored per workflow.

Three kinds of deviation, each with its own test:
- **burst**: one step far above the baseline in a count or size (a compromised agent suddenly issuing privileged
  calls): a z-score over `burst_z` *and* an excess over the baseline of at least `burst_min_excess` (counts) or
  `burst_min_ratio` (tokens, time), so 1 against 0 is no burst. A burst step is not learned: an agent that keeps
  misbehaving stays flagged.
- **sequence**: a tool transition the agent practically never makes (under `sequence_min_share` of its
  transitions), or a tool it has never used. Transitions are learned anyway, so a new normal stops being flagged.
- **drift**: a sustained shift of a feature's mean (the agent becoming more verbose): a fast exponentially
  weighted mean against the reference mean, beyond `drift_ratio` for `drift_persistence` steps in a row (the
  reference stops learning while the fast mean is on its way there, so a slope does not drag it along). Reported
  once per shift; then the reference is learned again from the new level. (ADWIN would flag any statistically
  significant change, however small; what matters here is a shift of a meaningful share, sustained.)
- **error_rate**: the exponentially weighted failure rate over `error_rate` and several times the reference.

Nothing is judged before `warmup_steps` steps of an agent. Deterministic: no randomness.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from pydantic import BaseModel, Field
from river import stats

START = "^"
OTHER_TOOL = "<other>"
COUNT_FEATURES = ("tool_calls", "privileged_calls")
SIZE_FEATURES = ("tokens", "duration_s")


@dataclass(frozen=True)
class StepBehaviour:
    """What one finished agent step did (from its StepCompleted)."""

    agent: str
    workflow_id: str
    workflow_type: str
    tools: tuple[str, ...]  # tool names called in the step, in order
    privileged_calls: int  # calls of a write or irreversible tool
    tokens: int
    duration_s: float
    failed: bool

    def features(self) -> dict[str, float]:
        return {
            "tool_calls": float(len(self.tools)),
            "privileged_calls": float(self.privileged_calls),
            "tokens": float(self.tokens),
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True)
class Anomaly:
    """A step outside its agent's baseline."""

    agent: str
    workflow_id: str
    kind: str  # burst | sequence | drift | error_rate
    feature: str
    observed: float
    baseline: float
    score: float
    threshold: float
    detail: str


class AnomalySettings(BaseModel):
    """Thresholds of the behaviour monitor (the supervisor reads them as BATON_SUPERVISOR_ANOMALY_*)."""

    warmup_steps: int = Field(50, ge=1, description="steps of an agent learned before any verdict")
    burst_z: float = Field(6.0, gt=0, description="z-score of a one-step burst")
    burst_min_excess: float = Field(3.0, gt=0, description="a count burst is at least this many above the mean")
    burst_min_ratio: float = Field(1.0, gt=0, description="a size burst is at least this share above the mean")
    # Latency is learned (and reported in the baseline) but judged only when listed: it follows the load and the
    # tools' own latency more than the agent's behaviour.
    burst_features: tuple[str, ...] = ("tool_calls", "privileged_calls", "tokens")
    drift_ratio: float = Field(0.25, gt=0, description="a shift of the mean by this share is drift")
    drift_persistence: int = Field(20, ge=1, description="steps in a row the shift must hold")
    drift_freeze_share: float = Field(
        0.25, gt=0, le=1, description="the reference stops learning once the fast mean is this share of a drift away"
    )
    drift_features: tuple[str, ...] = ("tokens", "tool_calls")
    fading_factor: float = Field(0.05, gt=0, lt=1, description="weight of the newest step in the fast mean")
    reference_horizon: int = Field(500, ge=2, description="steps the reference level averages over after warm-up")
    sequence_min_share: float = Field(0.002, ge=0, lt=1, description="a rarer tool transition is unusual")
    error_rate: float = Field(0.5, gt=0, le=1, description="a failure rate over this (and 3x usual) is anomalous")
    max_tools: int = Field(256, ge=1, description="distinct tools tracked per agent; the rest count as one")


@dataclass
class _Feature:
    """One feature's baseline: the reference level (the mean of the warm-up, then a slow exponentially weighted
    mean, so it keeps adapting over hundreds of steps but never chases a slope), the spread, a fast mean and the
    drift state."""

    mean: stats.Mean = field(default_factory=stats.Mean)
    var: stats.Var = field(default_factory=stats.Var)
    slow: stats.EWMean | None = None
    fast: stats.EWMean | None = None
    shifted_for: int = 0

    def reference(self) -> float:
        return float(self.slow.get() if self.slow is not None else self.mean.get())

    def shift(self) -> float:
        """How far the fast mean is from the reference, as a share of it."""
        reference = self.reference()
        if self.fast is None or reference <= 0:
            return 0.0
        return float((self.fast.get() - reference) / reference)

    def learn(self, value: float, settings: AnomalySettings, *, reference: bool = True) -> None:
        if reference:
            self.mean.update(value)
            self.var.update(value)
            if self.slow is not None:
                self.slow.update(value)
            elif self.mean.n >= settings.warmup_steps:
                self.slow = stats.EWMean(fading_factor=1 / settings.reference_horizon)
                self.slow.update(self.mean.get())
        if self.fast is None:
            self.fast = stats.EWMean(fading_factor=settings.fading_factor)
        self.fast.update(value)

    @property
    def n(self) -> float:
        return float(self.mean.n)

    def std(self) -> float:
        variance = self.var.get() if self.var.n > 1 else 0.0
        return math.sqrt(max(variance, 0.0))

    def relearn(self, fading_factor: float, at: float) -> None:
        """Start the reference again from the current level (after a drift was reported)."""
        self.mean, self.var, self.slow = stats.Mean(), stats.Var(), None
        self.fast = stats.EWMean(fading_factor=fading_factor)
        self.fast.update(at)
        self.shifted_for = 0


@dataclass
class _Baseline:
    steps: int = 0
    features: dict[str, _Feature] = field(default_factory=dict)
    errors: _Feature = field(default_factory=_Feature)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    tools: set[str] = field(default_factory=set)


class BehaviourMonitor:
    """Learns each agent kind's baseline from its steps and reports the steps outside it."""

    def __init__(self, settings: AnomalySettings | None = None, *, max_agents: int = 1000) -> None:
        self.settings = settings or AnomalySettings()
        self.max_agents = max_agents
        self._agents: OrderedDict[str, _Baseline] = OrderedDict()

    def __len__(self) -> int:
        return len(self._agents)

    def _baseline(self, agent: str) -> _Baseline:
        found = self._agents.get(agent)
        if found is None:
            found = self._agents[agent] = _Baseline()
            while len(self._agents) > self.max_agents:
                self._agents.popitem(last=False)
        else:
            self._agents.move_to_end(agent)
        return found

    def _tool(self, base: _Baseline, tool: str) -> str:
        if tool in base.tools or len(base.tools) < self.settings.max_tools:
            base.tools.add(tool)
            return tool
        return OTHER_TOOL

    def observe(self, step: StepBehaviour) -> list[Anomaly]:
        """Judge one step against its agent's baseline (after warm-up), then learn from it."""
        s = self.settings
        base = self._baseline(step.agent)
        judged = base.steps >= s.warmup_steps
        found: list[Anomaly] = []
        values = step.features()
        path = [START, *(self._tool(base, t) for t in step.tools)]
        transitions = list(itertools.pairwise(path))
        if judged:
            found += self._bursts(step, base, values)
            found += self._sequences(step, base, transitions)
        bursty = any(a.kind == "burst" for a in found)
        # Learn: a burst step is kept out of the sizes' baseline, so misbehaviour never becomes the norm.
        base.steps += 1
        base.transitions.update(transitions)
        if not bursty:
            for name, value in values.items():
                feature = base.features.setdefault(name, _Feature())
                # While the fast mean is on its way to a drift, the reference stops learning: a slow drift must not
                # drag the baseline along with it (it is judged against where the agent was).
                drifting = (
                    name in s.drift_features
                    and feature.n >= s.warmup_steps
                    and abs(feature.shift()) >= s.drift_ratio / 2
                )
                feature.learn(value, s, reference=not drifting)
        base.errors.learn(1.0 if step.failed else 0.0, s)
        if judged:
            found += self._drifts(step, base, values)
            found += self._error_rate(step, base)
        return found

    def _bursts(self, step: StepBehaviour, base: _Baseline, values: dict[str, float]) -> list[Anomaly]:
        s = self.settings
        out: list[Anomaly] = []
        for name, value in values.items():
            feature = base.features.get(name)
            if name not in s.burst_features or feature is None or feature.n < s.warmup_steps:
                continue  # no baseline yet (or learning again after a drift)
            mean = feature.reference()
            excess = value - mean
            floor = s.burst_min_excess if name in COUNT_FEATURES else s.burst_min_ratio * max(mean, 1e-9)
            # A feature that never varied has no spread: the excess floor alone decides, not an infinite z.
            z = excess / max(feature.std(), 1e-9) if feature.std() > 0 else (math.inf if excess > 0 else 0.0)
            if excess >= floor and z >= s.burst_z:
                out.append(
                    Anomaly(
                        step.agent,
                        step.workflow_id,
                        "burst",
                        name,
                        value,
                        mean,
                        min(z, 1e9),
                        s.burst_z,
                        f"{step.agent} made {value:g} {name.replace('_', ' ')} in one step against a baseline of "
                        f"{mean:.2f} (z {min(z, 1e9):.1f}): check the workflow's tool calls and the agent's inputs; "
                        "a compromised or prompt-injected agent looks like this",
                    )
                )
        return out

    def _sequences(self, step: StepBehaviour, base: _Baseline, transitions: list[tuple[str, str]]) -> list[Anomaly]:
        s = self.settings
        total = sum(base.transitions.values())
        out: list[Anomaly] = []
        for before, after in dict.fromkeys(transitions):
            seen = base.transitions[(before, after)]
            share = seen / total if total else 0.0
            if share >= s.sequence_min_share:
                continue
            new_tool = after not in {b for _, b in base.transitions}
            out.append(
                Anomaly(
                    step.agent,
                    step.workflow_id,
                    "sequence",
                    "tool_mix" if new_tool else "tool_transition",
                    share,
                    s.sequence_min_share,
                    seen,
                    s.sequence_min_share,
                    (
                        f"{step.agent} called {after!r}, a tool it never used in {base.steps} steps"
                        if new_tool
                        else f"{step.agent} called {after!r} after {before!r}, which it did in {seen} of {total} "
                        "transitions"
                    )
                    + ": check why its plan changed (a changed prompt, an injected instruction, a new tool)",
                )
            )
        return out

    def _drifts(self, step: StepBehaviour, base: _Baseline, values: dict[str, float]) -> list[Anomaly]:
        s = self.settings
        out: list[Anomaly] = []
        for name in s.drift_features:
            feature = base.features.get(name)
            if feature is None or feature.fast is None or feature.n < s.warmup_steps:
                continue
            reference, recent, shift = feature.reference(), feature.fast.get(), feature.shift()
            # A count drifts by whole calls: 0.7 to 0.9 calls a step is a change of mix, not of behaviour.
            small = name in COUNT_FEATURES and abs(recent - reference) < s.burst_min_excess / 3
            if abs(shift) < s.drift_ratio or small:
                feature.shifted_for = 0
                continue
            feature.shifted_for += 1
            if feature.shifted_for < s.drift_persistence:
                continue
            out.append(
                Anomaly(
                    step.agent,
                    step.workflow_id,
                    "drift",
                    name,
                    recent,
                    reference,
                    shift,
                    s.drift_ratio,
                    f"{step.agent}'s {name.replace('_', ' ')} moved {shift:+.0%} from its baseline ({reference:.1f} to "
                    f"{recent:.1f}) over its last steps: check what changed (model, prompt, inputs); the baseline now "
                    "learns the new level",
                )
            )
            feature.relearn(s.fading_factor, values[name])
        return out

    def _error_rate(self, step: StepBehaviour, base: _Baseline) -> list[Anomaly]:
        s = self.settings
        errors = base.errors
        if errors.fast is None:
            return []
        recent, usual = errors.fast.get(), errors.reference()
        if errors.shifted_for:  # reported: once, until the rate is back under half the threshold
            if recent < s.error_rate / 2:
                errors.shifted_for = 0
            return []
        if not step.failed or recent < s.error_rate or recent < 3 * usual:
            return []
        errors.shifted_for = 1
        return [
            Anomaly(
                step.agent,
                step.workflow_id,
                "error_rate",
                "errors",
                recent,
                usual,
                recent / max(usual, 1e-9),
                s.error_rate,
                f"{step.agent} failed {recent:.0%} of its recent steps against {usual:.0%} usually: check its tools "
                "and model",
            )
        ]

    def baseline(self, agent: str) -> dict[str, float]:
        """A summary of an agent's baseline (empty for an agent never seen)."""
        base = self._agents.get(agent)
        if base is None:
            return {}
        summary: dict[str, float] = {"steps": float(base.steps)}
        for name, feature in base.features.items():
            summary[f"{name}_mean"] = feature.reference()
            summary[f"{name}_std"] = feature.std()
        summary["error_rate"] = base.errors.reference()
        summary["tools"] = float(len(base.tools))
        return summary
