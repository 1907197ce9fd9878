"""What the chain said about a submitted extrinsic, as typed errors.

A transaction refused by the pool before inclusion (no fee charged) and an extrinsic included
but failed (fee charged, nothing applied) both become errors a caller can act on: lack of
funds is ``InsufficientBalance``, a nonce already in use is ``ChainOutcomeUnknown`` (read the
chain back), and a dispatch error names the pallet error (``Balances.InsufficientBalance``).
"""

from __future__ import annotations

from typing import Any

from substrateinterface import Keypair, SubstrateInterface
from substrateinterface.exceptions import SubstrateRequestException

from decentralml.protocol.errors import ChainError, ChainOutcomeUnknown, InsufficientBalance

_POOL_REFUSALS_UNKNOWN = frozenset({1012, 1013, 1014})
"""Pool refusals meaning another extrinsic with this nonce is pending or was just seen
(temporarily banned, already imported, priority too low): not a verdict on ours."""


class ChainDispatchError(ChainError):
    """An extrinsic was included but failed: its fee was charged, none of its calls applied.
    Carries where it landed, so a caller can tell this failure from later records."""

    def __init__(self, message: str, *, error_name: str, block_number: int, extrinsic_index: int):
        super().__init__(message)
        self.error_name = error_name
        self.block_number = block_number
        self.extrinsic_index = extrinsic_index


class ChainInsufficientBalance(ChainDispatchError, InsufficientBalance):
    """The chain itself refused a transfer for lack of funds (module error
    Balances.InsufficientBalance): catchable as ChainError or as InsufficientBalance."""


def refused(
    exc: SubstrateRequestException, keypair: Keypair, extrinsic_hash: str, nonce: int
) -> ChainError | InsufficientBalance:
    """Map a transaction-pool refusal (before inclusion; no fee charged) to a typed error."""
    detail = exc.args[0] if exc.args else exc
    code = detail.get("code") if isinstance(detail, dict) else None
    message = str(detail.get("message", detail)) if isinstance(detail, dict) else str(detail)
    text = f"{message} {detail.get('data', '')}" if isinstance(detail, dict) else message
    if code == 1010 and "payment" in text.lower():
        return InsufficientBalance(
            f"the chain refused the transaction of {keypair.ss58_address}: it cannot pay the "
            "fee (1010 invalid payment); fund the account and retry"
        )
    if code == 1010 and "stale" in text.lower():
        return ChainOutcomeUnknown(
            f"nonce {nonce} of {keypair.ss58_address} is already used (1010 stale), perhaps by "
            "an earlier submission of the same records: read the chain back",
            extrinsic_hash=extrinsic_hash,
            nonce=nonce,
        )
    if code in _POOL_REFUSALS_UNKNOWN:
        return ChainOutcomeUnknown(
            f"the pool refused the transaction of {keypair.ss58_address} because another with "
            f"nonce {nonce} is pending or was just seen ({detail}); read the chain back",
            extrinsic_hash=extrinsic_hash,
            nonce=nonce,
            pending=True,
        )
    return ChainError(f"the chain refused the transaction of {keypair.ss58_address}: {detail}")


def failed(
    substrate: SubstrateInterface, receipt: Any, error: Any, block_number: int
) -> ChainDispatchError:
    """The error for a failed extrinsic's receipt, naming the pallet error that failed it."""
    name = error.get("name", "Unknown") if isinstance(error, dict) else str(error)
    docs = " ".join(error.get("docs", [])) if isinstance(error, dict) else ""
    pallet = _failed_pallet(substrate, receipt)
    qualified = f"{pallet}.{name}" if pallet else name
    message = (
        f"extrinsic failed in block {block_number} (index {receipt.extrinsic_idx}): "
        f"{qualified}" + (f" ({docs})" if docs else "") + "; nothing of it was applied"
    )
    cls = ChainInsufficientBalance if name == "InsufficientBalance" else ChainDispatchError
    return cls(
        message,
        error_name=qualified,
        block_number=block_number,
        extrinsic_index=int(receipt.extrinsic_idx),
    )


def _failed_pallet(substrate: SubstrateInterface, receipt: Any) -> str:
    """The pallet that raised a module error, read from the ExtrinsicFailed event."""
    for event in receipt.triggered_events or []:
        value = event.value
        if (value["module_id"], value["event_id"]) != ("System", "ExtrinsicFailed"):
            continue
        dispatch_error = value["attributes"].get("dispatch_error", {})
        module = dispatch_error.get("Module") if isinstance(dispatch_error, dict) else None
        if isinstance(module, dict) and "index" in module:
            pallet = substrate.metadata.get_pallet_by_index(int(module["index"]))
            return str(pallet.name) if pallet is not None else ""
    return ""
