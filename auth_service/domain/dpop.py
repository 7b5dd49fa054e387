"""DPoP at the issuer (RFC 9449): when a request's proof counts, and what a credential's binding
demands of it. ``shared.dpop`` verifies the proof; the rules here decide whether it is asked for.

- ``AUTH_DPOP`` (a confidential client's own ``dpop`` overrides it for its users) is ``off``
  (proofs are ignored, nothing new is bound), ``optional`` (bound when the client proves a key,
  bearer otherwise) or ``required`` (every token issued is bound).
- A bound credential (a session's refresh tokens, a ``cnf`` access token) is never accepted
  without a proof of its key, whatever the policy says now: a binding outlives a policy change.
"""

from __future__ import annotations

import enum

from auth_service.domain.errors import InvalidDpopProof, StoreUnavailable, UseDpopNonce
from shared.bus import BusUnavailable
from shared.dpop import ALGORITHMS, NonceRequired, Nonces, Presented, ProofError, ProofVerifier

__all__ = ["DpopGate", "DpopPolicy", "Presented"]


class DpopPolicy(enum.Enum):
    OFF = "off"
    OPTIONAL = "optional"
    REQUIRED = "required"

    @classmethod
    def parse(cls, value: str, where: str) -> DpopPolicy:
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(f"{where} must be off, optional or required, got {value!r}") from None


class DpopGate:
    """The issuer's proof checks: ``policy`` is ``AUTH_DPOP``; ``nonces`` when server nonces
    are on (``AUTH_DPOP_NONCE``)."""

    def __init__(
        self, verifier: ProofVerifier, policy: DpopPolicy, nonces: Nonces | None = None
    ) -> None:
        self._verifier = verifier
        self.policy = policy
        self.nonces = nonces

    @property
    def algorithms(self) -> list[str]:
        """``dpop_signing_alg_values_supported`` (none while DPoP is off)."""
        return [] if self.policy is DpopPolicy.OFF else list(ALGORITHMS)

    async def key(
        self,
        presented: Presented | None,
        *,
        policy: DpopPolicy | None = None,
        bound: str | None = None,
        access_token: str | None = None,
    ) -> str | None:
        """The thumbprint of the key the request proves, or None when it proves none that
        counts. ``bound`` is the key the presented credential is bound to: its proof is then
        checked whatever the policy, and the caller compares the keys (a missing proof returns
        None). ``policy`` is the one that applies (the client's, else ``AUTH_DPOP``): ``off``
        ignores the header, ``required`` refuses a request without one. Raises
        ``InvalidDpopProof`` (``UseDpopNonce``) for a proof that does not verify."""
        policy = policy or self.policy
        if bound is None and policy is DpopPolicy.OFF:
            return None
        if presented is None:
            if bound is None and policy is DpopPolicy.REQUIRED:
                raise InvalidDpopProof("this server issues DPoP-bound tokens only: send a proof")
            return None
        try:
            proof = await self._verifier.verify(
                presented.proof,
                method=presented.method,
                url=presented.url,
                access_token=access_token,
                nonces=self.nonces,
            )
        except NonceRequired as exc:
            raise UseDpopNonce(exc.description) from None
        except ProofError as exc:
            raise InvalidDpopProof(exc.description) from None
        except BusUnavailable:
            raise StoreUnavailable("DPoP proofs cannot be checked right now") from None
        return proof.jkt
