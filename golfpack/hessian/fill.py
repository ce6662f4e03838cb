"""Spend what the allocation leaves: on a model with few, small tensors the knapsack's steps
are too coarse to land in the budget window (int8 -> fp16 moves a whole tensor by ~0.8 bytes
per value, and there is no candidate in between), so the slack goes to LQER rank increments
(golfpack.hessian.lqer) of the tensors stored as integers, one rank at a time (rows/4 +
cols/2 + 2·⌈cols/64⌉ bytes each, tens of bytes on such a model).

Greedy by measured gain: each step is the increment with the largest drop in predicted loss
(α · the Hessian-weighted error after both factors are quantized) per byte, among those that
fit the room left; a step that does not lower the error is never taken (a few ranks ahead are
tried, as int2 factors make the error slightly non-monotone in the rank). Every batch of
steps is checked by a real encode; the real/estimated byte ratio is measured from it, and a
batch that lands over the budget is discarded and retried smaller. The result is always the
best plan whose real encode is under the budget.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

from golfpack.errors import GolfError
from golfpack.hessian import lqer
from golfpack.hessian.fit import Encoded, FitResult, Option, TensorChoices, downgrade
from golfpack.quant.qmodel import reconstruct

MAX_ENCODES = 12  # real encodes the filler may spend
LOOKAHEAD = 4  # ranks tried past the current one
# First guesses of the fixed costs of the container, corrected by every real encode: the
# first correction in an artifact opens four streams (lr_a, lr_as, lr_b, lr_bs), each
# further tensor adds its part records (measured with zlib on a 57 k-parameter model:
# ~250 and ~45 bytes).
STREAMS_BYTES, TENSOR_BYTES = 256.0, 48.0
ROOM_TRIES = 3  # single-tensor moves tried to make room for a first correction
# (name, the tensor's option without a correction, rank) -> that option with a rank-`rank`
# correction (its err and est_bytes measured), or None where the rank is impossible or does
# not lower the error
RankOption = Callable[[str, Option, int], Option | None]


def _base(tc: TensorChoices, o: Option) -> Option:
    """The option of the same scheme without a correction."""
    if not o.lqer_rank:
        return o
    return next(b for b in tc.options if b.scheme == o.scheme and not b.lqer_rank)


@dataclass
class ByteModel:
    """Real bytes of a set of corrections ≈ ratio · their packed bytes + the fixed costs."""

    ratio: float = 1.0
    streams: float = STREAMS_BYTES
    tensor: float = TENSOR_BYTES

    def step(self, cur: Option, new: Option, opened: bool) -> float:
        return (self.ratio * (new.lqer_bytes - cur.lqer_bytes)
                + (0.0 if cur.lqer_rank else self.tensor) + (0.0 if opened else self.streams))

    def plan(self, before: dict[str, Option], after: dict[str, Option]) -> tuple[float, float]:
        """(packed bytes added, fixed bytes added) going from `before` to `after`."""
        packed = sum(after[n].lqer_bytes - before[n].lqer_bytes for n in after)
        new = sum(1 for n in after if after[n].lqer_rank and not before[n].lqer_rank)
        opened = any(o.lqer_rank for o in before.values())
        fixed = new * self.tensor + (self.streams if new and not opened else 0.0)
        return packed, fixed

    def learn(self, packed: float, fixed: float, real: float) -> None:
        if packed > 0:
            self.ratio = min(4.0, max(0.25, (real - fixed) / packed))


def _best_step(name, cur: Option, base: Option, alpha: float, room: float,
               rank_option: RankOption, model: ByteModel, opened: bool
               ) -> tuple[float, float, Option] | None:
    """(loss drop per byte, bytes, option) of the best increment of `name` within `room`."""
    best = None
    for r in range(cur.lqer_rank + 1, cur.lqer_rank + 1 + LOOKAHEAD):
        o = rank_option(name, base, r)
        if o is None:
            continue
        gain = alpha * (cur.err - o.err)
        cost = model.step(cur, o, opened)
        if gain <= 0 or cost <= 0 or cost > room:
            continue
        if best is None or gain / cost > best[0]:
            best = (gain / cost, cost, o)
    return best


def plan_steps(plan: dict[str, Option], choices: dict[str, TensorChoices], room: float,
               rank_option: RankOption, model: ByteModel) -> tuple[dict[str, Option], int]:
    """Greedy increments (lazily re-rated) within `room` predicted bytes -> (plan, steps)."""
    plan = dict(plan)
    bases = {n: _base(choices[n], o) for n, o in plan.items() if not o.passthrough}
    opened = any(o.lqer_rank for o in plan.values())

    def best(n):
        return _best_step(n, plan[n], bases[n], choices[n].alpha, room - spent, rank_option,
                          model, opened)

    spent, steps, heap = 0.0, 0, []
    for n in sorted(bases):
        s = best(n)
        if s:
            heap.append((-s[0], n))
    heapq.heapify(heap)
    while heap:
        _, n = heapq.heappop(heap)
        s = best(n)  # the room shrank and the fixed costs may be paid since it was rated
        if s is None:
            continue
        if heap and -heap[0][0] > s[0] * (1 + 1e-12):
            heapq.heappush(heap, (-s[0], n))
            continue
        rate, cost, o = s
        plan[n], spent, steps, opened = o, spent + cost, steps + 1, True
        s = best(n)
        if s:
            heapq.heappush(heap, (-s[0], n))
    return plan, steps


def _fill(plan, enc, budget, tol, choices, encode, rank_option, model, history, log):
    """Batches of increments, each checked by a real encode -> the best (plan, enc) under."""
    floor, aim = budget * (1.0 - tol), budget * (1.0 - tol / 3.0)
    for _ in range(MAX_ENCODES):
        if enc.total_bytes >= floor or len(history) >= MAX_ENCODES:
            break
        trial, steps = plan_steps(plan, choices, aim - enc.total_bytes, rank_option, model)
        if not steps:
            break
        packed, fixed = model.plan(plan, trial)
        e = encode(trial)
        history.append({"filler": True, "lqer_steps": steps, "packed_added": packed,
                        "total_bytes": e.total_bytes, "fill": e.total_bytes / budget})
        if log:
            log(f"fill: {steps} LQER rank steps (~{packed + fixed:,.0f} bytes) -> total "
                f"{e.total_bytes:,} bytes ({e.total_bytes / budget:.3%} of the budget)")
        model.learn(packed, fixed, e.total_bytes - enc.total_bytes)
        if e.total_bytes <= budget:  # (over: the model learnt, the next batch is smaller)
            plan, enc = trial, e
    return plan, enc


def predicted_loss(choices, plan) -> float:
    """Σ α·e of a plan: the loss the fit predicts for it."""
    return sum(choices[n].alpha * o.err for n, o in plan.items())


def _room_makers(choices, picks, need: float, count: int = ROOM_TRIES):
    """Plans that free >= `need` estimated bytes by moving one tensor to a smaller option,
    least predicted loss first (ties: fewest bytes freed), then the greedy downgrade."""
    moves = []
    for n, cur in picks.items():
        tc = choices[n]
        now = tc.options.index(cur)
        l0, b0 = tc.cost(now)
        for i in range(len(tc.options)):
            dl, db = tc.cost(i)[0] - l0, b0 - tc.cost(i)[1]
            if db >= need:
                moves.append((dl, db, n, i))
    moves.sort(key=lambda m: (m[0], m[1], m[2], m[3]))
    for _dl, _db, n, i in moves[:count]:
        yield {**picks, n: choices[n].options[i]}
    names = list(choices)
    lst = [choices[n] for n in names]
    try:
        down = downgrade(lst, [lst[t].options.index(picks[n]) for t, n in enumerate(names)],
                         max(need, 1.0))
    except GolfError:
        return
    yield {n: lst[t].options[i] for t, (n, i) in enumerate(zip(names, down, strict=True))}


def fill_slack(result: FitResult, encode: Callable[[dict[str, Option]], Encoded],
               rank_option: RankOption, tol: float = 0.005,
               log: Callable[[str], None] | None = None) -> FitResult:
    """Raise the real total of `result` into [budget·(1 − tol), budget] with LQER rank
    increments where it landed below; never over the budget (real encodes). Where the slack
    is smaller than a first correction's fixed costs, a smaller option of one tensor (the
    few with the least predicted loss, then the greedy downgrade) makes room first; that
    plan is kept only if it lands in the window with no higher a predicted loss."""
    budget, choices = result.budget, result.choices
    floor = budget * (1.0 - tol)
    model, fills = ByteModel(), []
    plan, enc = _fill(result.picks, result.encoded, budget, tol, choices, encode, rank_option,
                      model, fills, log)
    if enc.total_bytes < floor:
        need = (model.streams * (not any(o.lqer_rank for o in result.picks.values()))
                + model.tensor + 64.0 - (budget - enc.total_bytes))
        for p2 in _room_makers(choices, result.picks, need):
            if len(fills) >= MAX_ENCODES - 1:
                break
            e2 = encode(p2)
            fills.append({"filler": True, "downgrade": True, "total_bytes": e2.total_bytes,
                          "fill": e2.total_bytes / budget})
            if e2.total_bytes > budget:
                continue
            p2, e2 = _fill(p2, e2, budget, tol, choices, encode, rank_option, model, fills, log)
            # kept where it lands and does not raise the predicted loss: the window is not
            # worth a worse model
            if e2.total_bytes >= floor and \
                    predicted_loss(choices, p2) <= predicted_loss(choices, plan):
                plan, enc = p2, e2
                break
    history = list(result.iterations)
    for row in fills:
        history.append({"iteration": len(history), **row})
    return FitResult(plan, enc, budget, history, choices)


class LqerLadder:
    """(name, option, rank) -> the option with a rank-`rank` LQER correction fitted to the
    codes the encoder stores for it (its entry goes into the setup's cache, so the encode
    stores exactly what was measured); None where the rank is impossible or gains nothing.
    The error's SVD is taken once per tensor and scheme and truncated for each rank."""

    def __init__(self, encoder):  # a golfpack.hessian.pipeline.PlanEncoder
        self.encoder, self.memo = encoder, {}
        self.w_hats: dict = {}  # (name, scheme) -> ŵ of the codes the encoder stores
        self.svds: dict = {}  # (name, scheme) -> lqer.ErrorSVD of those codes

    def __call__(self, name: str, base: Option, rank: int) -> Option | None:
        key = (name, base.scheme, rank)
        if key not in self.memo:
            st = self.encoder.setup
            entry = self.encoder.entries_for({name: base})[name]
            k = (name, base.scheme)
            if k not in self.w_hats:  # (qmodel.reconstruct: bit-identical to dequantize)
                self.w_hats[k] = reconstruct(entry).reshape(entry.shape[0], -1)
            w_hat = self.w_hats[k]
            opt = None
            if rank <= min(w_hat.shape):
                w, prep = st.state_dict[name], st.preps[name]
                if k not in self.svds:
                    self.svds[k] = lqer.error_svd(w, w_hat, prep)
                lr = lqer.fit_lowrank(w, w_hat, prep, rank, svd=self.svds[k])
                if 0 < lr.err_after < lr.err_before or (lr.err_after == 0 < lr.err_before):
                    nb = lr.nbytes()
                    opt = Option(base.scheme, base.err * lr.err_after / lr.err_before,
                                     base.est_bytes + nb, rank, nb)
                    st.cache[key] = lqer.lqer_entry(entry, lr)
            self.memo[key] = opt
        return self.memo[key]
