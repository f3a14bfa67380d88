"""One routed call: which deployment each attempt goes to, when to give up, where to fall back.

A :class:`CallRoute` implements :class:`~tracking.router.protocol.Route` for a single call.
The call's model group comes first, then its fallbacks in order. Within a group the call gets
``1 + num_retries`` attempts (the router's count governs, the client's own retries
are not added on top; a deployment's LiteLLM ``max_retries`` bounds how often the call goes
back to that deployment after it failed there, 0: never); each retry goes to a deployment that
has not failed this call while one is available, and only waits (backoff, or the upstream's
``Retry-After``) when it must go back to one that has. Deployments with LiteLLM's ``order``
are tried by it: the routing strategy chooses among the free deployments of the lowest order (a
deployment that failed this call is not free while another is).

What an error means for routing:

* the request's fault (400, 413, 422, or any other 4xx but 401/403/404/408/409): the call
  fails at once, on any group; retrying elsewhere would fail the same way;
* the deployment's fault (429, 5xx, timeouts, dropped connections, 401/403/404 from a
  misconfigured deployment, 408/409): counted against the deployment and retried elsewhere;
  401/403/404 cool the deployment down at once, the others once it has failed more than
  ``allowed_fails`` times within a minute, unless it is the only deployment of its group
  (cooling it down would refuse every call for ``cooldown_time`` over a passing fault);
* a 2xx answer that cannot be read (:class:`~tracking.errors.APIResponseError`, not a job
  result that expired): counted against the deployment like the faults above, but never
  retried, since it was most likely billed;
* a deployment whose model the request is not valid for (``ValidationError`` when parsed for
  it: ``n=2`` for a one-image model in a group of mixed models): never sent, no attempt
  counted; the group's other deployments are tried. When none of the asked group's takes the
  request, its error fails the call (the request's fault: no fallback); a fallback group none
  of whose deployments takes it is skipped, the reason logged and recorded
  (``fallbacks_skipped``);
* a deployment whose provider cannot do the call's operation (``UnsupportedOperationError``:
  a generation on an edit-only provider): never sent, no attempt counted; the group's other
  deployments are tried, then its fallbacks (one none of whose deployments can is skipped).

A fallback group the call's :class:`~tracking.call_control.CallControl` says may not serve it
(``may_serve``: the proxy's ``enforce_fallback_model_access``, for a key whose ``models`` leave
the group out) is skipped the same way, before anything is picked or sent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..call_control import Withheld, current_control
from ..errors import (
    APIError,
    APIResponseError,
    ConfigurationError,
    RateLimitError,
    UnsupportedOperationError,
    ValidationError,
)
from ..pricing.estimate import input_image_count
from ..targets import Steps
from .deployments import Deployment
from .protocol import Routing, Target
from .state import Place
from .strategies import CallShape

if TYPE_CHECKING:
    from ..response import ImageResponse
    from .router import Router

__all__ = ["CallRoute", "NoDeploymentAvailableError"]

log = logging.getLogger("tracking.router")

#: Statuses that say a deployment is misconfigured (key, permissions, deployment name).
_COOL_AT_ONCE = frozenset({401, 403, 404})
#: Statuses that are the deployment's business although not marked retryable in the tree.
_DEPLOYMENT_STATUSES = _COOL_AT_ONCE | {408, 409}


class NoDeploymentAvailableError(RateLimitError):
    """Every deployment of the model group (and of its fallbacks) is cooling down or at its
    rpm/tpm limit. ``retry_after`` says when the first one comes back, where known."""

    error_type = "no_deployment_available"


def is_deployment_fault(error: BaseException) -> bool:
    """Whether another deployment might succeed where this one failed."""
    if not isinstance(error, APIError) or error.job_submitted:  # a billed job: never again
        return False
    return error.retryable or error.status_code in _DEPLOYMENT_STATUSES


def _unreadable_answer(error: BaseException) -> bool:
    """A 2xx answer the deployment sent that cannot be read (not an expired job result)."""
    if not isinstance(error, APIResponseError) or error.job_submitted:
        return False
    status = error.status_code
    return status is None or 200 <= status < 300


class CallRoute:
    """The routing decisions of one call (see the module docstring)."""

    def __init__(self, router: Router, params: Mapping[str, Any]) -> None:
        self.router = router
        asked = params.get("model")
        self.asked: str | None = asked if isinstance(asked, str) else None
        self.asked_type = None if asked is None else type(asked).__name__
        self.chain: tuple[str, ...] = ()
        if self.asked is not None:
            self.chain = (self.asked, *router.fallbacks.get(self.asked, ()))
        max_retries = params.get("max_retries")
        self.num_retries = (
            max_retries
            if isinstance(max_retries, int)
            and not isinstance(max_retries, bool)
            and max_retries >= 0
            else router.num_retries
        )
        self.call_timeout = params.get("timeout")
        self.stream = bool(params.get("stream"))
        operation = params.get("operation")
        self.operation = operation if isinstance(operation, str) else "image_edit"
        self.shape = CallShape(
            model_group=self.asked or "",
            n=params["n"] if isinstance(params.get("n"), int) else 1,
            size=params.get("size") if isinstance(params.get("size"), str) else None,
            quality=params.get("quality") if isinstance(params.get("quality"), str) else None,
            input_images=input_image_count(params),
        )
        self.group_index = 0
        self.group_attempts = 0
        self.retries = 0  # attempts that repeated one in their group (not a fallback's first)
        self.failed: dict[str, APIError] = {}  # this group's deployments that failed this call
        #: how many times each of this group's deployments failed this call: one whose
        #: ``max_retries`` they exceed is not sent the call again
        self.failures: dict[str, int] = {}
        self.unavailable: list[str] = []  # why groups had nothing to offer
        #: a deployment was passed over for being busy (cooling down, at its rpm/tpm): the
        #: call may be served later, so that is the error, not the provider's refusal
        self.busy = False
        self.retry_after: float | None = None
        self.skipped: list[tuple[str, str]] = []  # (fallback group, why it was skipped)
        self.last_error: APIError | None = None  # the last upstream failure
        #: the asked group's first deployment whose provider cannot do the call's operation (a
        #: generation on an edit-only provider): raised when nothing else serves the call
        self.unsupported: UnsupportedOperationError | None = None
        #: deployments whose provider cannot do the call's operation: never sent, left out of the
        #: rest of the call (the group's others are tried, then its fallbacks)
        self.unserved: dict[str, UnsupportedOperationError] = {}
        #: deployments whose settings failed when a request was prepared for them (a setting
        #: checked at load that went missing since, such as ``AZURE_API_VERSION``): never sent,
        #: left out of the rest of the call; the first is raised when nothing else serves it
        self.misconfigured: dict[str, ConfigurationError] = {}
        #: deployments whose model the request is not valid for: never sent, left out of the
        #: rest of the call; when none of a group's deployments takes it, the asked group's
        #: first is raised (the request's fault) and a fallback group is skipped
        self.invalid: dict[str, ValidationError] = {}
        self.deployment: Deployment | None = None  # the last one picked
        self.attempted: Deployment | None = None  # the last one a request was sent to
        control = current_control()
        #: which fallback groups the caller may be served by (None: any)
        self.may_serve = control.may_serve if control is not None else None

    # -- Route protocol ------------------------------------------------------------------

    def next(self, failure: BaseException | None) -> Steps[Target]:
        if self.asked is None:
            if self.asked_type is not None:
                raise ValidationError(
                    f"model: expected the name of a model group, got {self.asked_type}",
                    param="model",
                    rule="type",
                )
            raise ValidationError(
                "model: required, the model group to route to", param="model", rule="required"
            )
        if self.asked not in self.router.groups:
            known = ", ".join(sorted(self.router.groups))
            raise ValidationError(
                f"model: {self.asked!r} is not a model group of this router (known: {known})",
                param="model",
                rule="unknown_model",
            )
        if failure is not None:
            self._after_failure(failure)
        while self.group_index < len(self.chain):
            group = self.chain[self.group_index]
            if self.group_attempts > self.num_retries:
                self._advance()
                continue
            if self.group_index > 0 and self.may_serve is not None and not self.may_serve(group):
                reason = "the caller's key may not call it (enforce_fallback_model_access)"
                self.skipped.append((group, reason))
                log.warning("router: fallback %r skipped: %s", group, reason)
                self._advance()
                continue
            picked = yield from self._pick(group)
            if picked is None:
                self._advance()
                continue
            deployment, place = picked
            if self.group_attempts:
                self.retries += 1
            self.group_attempts += 1
            self.deployment = deployment
            earlier = self.failed.get(deployment.id)
            return Target(
                overrides=deployment.overrides(self.call_timeout, self.stream),
                key=(deployment, place),
                backoff=earlier is not None,
                retry_after=earlier.retry_after if earlier is not None else None,
            )
        raise self._forgetting_failures(self._final_error())

    def _forgetting_failures(self, failure: BaseException) -> BaseException:
        """``failure``, the call's last, with the route keeping none of its failures any more:
        a raised exception's traceback holds this route's frames, and through them the call's
        images, so a failure kept here made a cycle that only a full collection broke (the
        proxy collects rarely: every refused upload stayed in memory)."""
        self.failed = {}
        self.last_error = self.unsupported = None
        self.unserved, self.misconfigured, self.invalid = {}, {}, {}
        return failure

    def done(
        self,
        target: Target,
        error: BaseException | None,
        latency_ms: float | None,
        response: ImageResponse | None,
    ) -> Steps[None]:
        deployment: Deployment
        place: Place
        deployment, place = target.key
        state = self.router.stepwise_state
        try:
            if isinstance(error, ValidationError | Withheld | ConfigurationError):  # not sent
                # the request never went: its place in the deployment's rpm is given back, to
                # the minute it was taken in
                yield from state.release(place)
                return
            self.attempted = deployment
            yield from state.end(place)
            if error is None:
                usage = response.usage if response is not None else None
                tokens = usage.total_tokens if usage else 0
                yield from state.record_success(deployment.id, latency_ms, tokens)
                if response is not None:
                    response._hidden_params.update(
                        deployment_id=deployment.id,
                        model_group=deployment.model_name,
                        fallbacks_skipped=[
                            {"model": group, "reason": reason} for group, reason in self.skipped
                        ],
                    )
                return
            # an answer this deployment sent that cannot be read is not retried (it was
            # billed), but it is the deployment's fault all the same: it counts toward cooldown
            if not is_deployment_fault(error) and not _unreadable_answer(error):
                return
            assert isinstance(error, APIError)
            # The only deployment of a group is never cooled down: for failures that pass (429,
            # 5xx, timeouts) that would turn a brief hiccup into a minute of refusals, and for a
            # refused credential (401/403/404) callers would see a misleading 429 "no deployment
            # available" instead of the upstream's own answer.
            alone = len(self.router.groups.get(deployment.model_name, ())) <= 1
            failures = yield from state.record_failure(deployment.id)
            if not alone and (
                error.status_code in _COOL_AT_ONCE or failures > self.router.allowed_fails
            ):
                yield from self.router.cool_down_steps(deployment, error.error_type)
        except Exception:  # routing bookkeeping must never break a call
            log.exception("router: recording the outcome for deployment %s failed", deployment.id)

    def routing(self, model: str, model_group: str | None) -> Routing:
        # the group and deployment that served, or last failed; else the group asked for
        last = self.attempted
        group = last.model_name if last is not None else (self.asked or model_group)
        served_at = self.chain.index(group) if group in self.chain else 0
        return Routing(
            self.asked if self.asked is not None else model,
            group,
            last.id if last is not None else None,
            self.chain[:served_at],
            self.retries,
        )

    # -- decisions ----------------------------------------------------------------------------

    def _after_failure(self, failure: BaseException) -> None:
        if isinstance(failure, ConfigurationError) and self.deployment is not None:
            log.error(
                "router: deployment %s cannot be called (%s); the call goes on without it",
                self.deployment.id,
                failure,
            )
            self.misconfigured.setdefault(self.deployment.id, failure)
            self._not_sent()
            return
        in_fallback = self.group_index > 0
        if isinstance(failure, UnsupportedOperationError) and self.deployment is not None:
            # this deployment's provider, not the group: the group's other deployments may serve
            self.unserved.setdefault(self.deployment.id, failure)
            if not in_fallback and self.unsupported is None:
                self.unsupported = failure
            self._not_sent()
            return
        if isinstance(failure, ValidationError) and self.deployment is not None:
            # the request does not fit this deployment's model (n=2 for a one-image model):
            # never sent, nor is it to the group's others of that model (the same rules); its
            # other models may take it (see ``_pick``)
            model = self.deployment.model
            for other in self.router.groups.get(self.deployment.model_name, ()):
                if other.model == model:
                    self.invalid.setdefault(other.id, failure)
            self._not_sent()
            return
        if not is_deployment_fault(failure):
            raise failure
        assert isinstance(failure, APIError)
        self.last_error = failure
        if self.deployment is not None:
            self.failed[self.deployment.id] = failure
            self.failures[self.deployment.id] = self.failures.get(self.deployment.id, 0) + 1

    def _not_sent(self) -> None:
        """The last target was never sent: no attempt, and no retry."""
        self.group_attempts -= 1
        if self.group_attempts:
            self.retries -= 1

    def _advance(self) -> None:
        self.group_index += 1
        self.group_attempts = 0
        self.failed = {}
        self.failures = {}

    def _pick(self, group: str) -> Steps[tuple[Deployment, Place] | None]:
        """A free deployment of ``group`` and the place its begin took there."""
        router = self.router
        candidates = [
            d
            for d in router.groups[group]
            if d.id not in self.misconfigured
            and d.id not in self.unserved
            and d.id not in self.invalid
        ]
        # LiteLLM's per-deployment max_retries: one that failed this call more often than
        # that is not sent it again (max_retries: 0, once)
        spent = [d for d in candidates if self._retries_spent(d)]
        if spent and len(spent) == len(candidates):
            self.unavailable.append(f"{group!r}: every deployment used its max_retries")
            return None
        candidates = [d for d in candidates if d not in spent]
        # a deployment that cannot do the call's operation is left to the end: picked, it
        # takes a turn (and a Redis exchange) for a request never sent
        capable = [d for d in candidates if d.serves(self.operation)]
        candidates = capable or candidates
        invalid = [self.invalid[d.id] for d in router.groups[group] if d.id in self.invalid]
        if not candidates and invalid:  # the request fits none of those left
            if self.group_index == 0:
                failure = invalid[0]
                del invalid
                raise self._forgetting_failures(failure)
            self.skipped.append((group, str(invalid[0])))
            log.warning("router: fallback %r skipped: %s", group, invalid[0])
            return None
        unserved = [self.unserved[d.id] for d in router.groups[group] if d.id in self.unserved]
        if not candidates and unserved and len(unserved) == len(router.groups[group]):
            if self.group_index > 0:  # a fallback none of whose providers can do the call
                self.skipped.append((group, str(unserved[0])))
                log.warning("router: fallback %r skipped: %s", group, unserved[0])
            return None
        if not candidates:
            self.unavailable.append(f"{group!r}: no deployment whose settings can be used")
            return None
        snapshot = yield from router.stepwise_state.snapshot([d.id for d in candidates])
        available = [
            d
            for d in candidates
            if d.id not in snapshot.cooling
            and (d.rpm is None or snapshot.rpm.get(d.id, 0) < d.rpm)
            and (d.tpm is None or snapshot.tpm.get(d.id, 0) < d.tpm)
        ]
        if not available:
            self.busy = True
            cooling = [snapshot.cooling[d.id] for d in candidates if d.id in snapshot.cooling]
            limited = len(candidates) - len(cooling)
            parts = []
            if cooling:
                parts.append(f"{len(cooling)} cooling down")
                soonest = min(cooling)
                self.retry_after = (
                    soonest if self.retry_after is None else min(self.retry_after, soonest)
                )
            if limited:
                parts.append(f"{limited} at their rpm/tpm limit")
                self._free_at_the_minutes_end(snapshot.window_left)
            self.unavailable.append(f"{group!r}: {' and '.join(parts)}")
            return None
        fresh = [d for d in available if d.id not in self.failed]
        for pool in _by_order(fresh or available):
            while pool:
                # One candidate leaves nothing to choose (and skips the strategy's scoring).
                choice = (
                    pool[0]
                    if len(pool) == 1
                    else router.strategy.choose(pool, snapshot, self.shape)
                )
                # a begin interrupted or cancelled before its place reaches here (even just
                # after Redis answered), or whose Redis exchange failed (the call then goes on
                # with a place on the local state), is taken back by the state's own steps
                # (see RedisState.exchange): no end here could
                place = yield from router.stepwise_state.begin(choice.id, choice.rpm)
                if place is not None:
                    return choice, place
                pool = [d for d in pool if d is not choice]  # its rpm filled up meanwhile
        # each filled up between the snapshot and its begin (other calls, other processes)
        self.busy = True
        self._free_at_the_minutes_end(snapshot.window_left)
        self.unavailable.append(f"{group!r}: every deployment at its rpm limit")
        return None

    def _retries_spent(self, deployment: Deployment) -> bool:
        """Whether ``deployment`` failed this call more often than its ``max_retries``."""
        most = deployment.max_retries
        return most is not None and self.failures.get(deployment.id, 0) > most

    def _free_at_the_minutes_end(self, left: float) -> None:
        """A deployment at its rpm/tpm limit is free again when this minute's window ends."""
        self.retry_after = left if self.retry_after is None else min(self.retry_after, left)

    def _final_error(self) -> BaseException:
        error: APIError | UnsupportedOperationError
        if self.last_error is not None:
            error = self.last_error
        elif self.unsupported is not None and not self.busy:
            error = self.unsupported
        elif self.misconfigured:
            return next(iter(self.misconfigured.values()))
        else:
            error = NoDeploymentAvailableError(
                "no deployment available for model "
                f"{self.asked!r}: {'; '.join(self.unavailable) or 'none left to try'}",
                retry_after=self.retry_after,
            )
        for group, reason in self.skipped:
            error.add_note(f"fallback {group!r} skipped: {reason}")
        return error


def _by_order(deployments: list[Deployment]) -> list[list[Deployment]]:
    """Deployments in tiers of LiteLLM's ``order`` (1 first, those without one last); one tier
    when no deployment has an order."""
    if all(d.order is None for d in deployments):
        return [deployments]
    tiers: dict[float, list[Deployment]] = {}
    for d in deployments:
        tiers.setdefault(d.order if d.order is not None else math.inf, []).append(d)
    return [tiers[order] for order in sorted(tiers)]
