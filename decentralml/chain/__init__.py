"""The Substrate side of the marketplace without a custom pallet.

``codec`` turns marketplace records into remark payloads and back; ``client`` submits
extrinsics (checked, with clear errors) and reads back the successful records of each block.
See docs/chain-protocol.md for the protocol as a whole.
"""

from decentralml.chain.codec import (
    Assign,
    Close,
    CodecError,
    Record,
    Result,
    TaskCreated,
    VerdictRecord,
    decode,
    encode,
)

__all__ = [
    "Assign",
    "Close",
    "CodecError",
    "Record",
    "Result",
    "TaskCreated",
    "VerdictRecord",
    "decode",
    "encode",
]
