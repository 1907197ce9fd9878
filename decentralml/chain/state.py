"""Chain and account state: heads, block hashes, nonces, balances, and the dev faucet."""

from __future__ import annotations

from scalecodec.utils.ss58 import ss58_encode

from decentralml.chain.connection import SS58_FORMAT, Connection
from decentralml.chain.types import account_param, ref_time
from decentralml.protocol.accounts import public_key_of
from decentralml.protocol.errors import ChainError


class ChainState:
    """Reads of the chain's state through ``connection`` (each retried across a restart),
    caching the runtime constants that never change under a running client."""

    def __init__(self, connection: Connection):
        self._connection = connection
        self._read = connection.read
        self._substrate = connection.substrate
        self._existential_deposit: int | None = None
        self._ss58_prefix: int | None = None

    def genesis_hash(self) -> str:
        return str(self._read(self._substrate.get_block_hash, 0))

    def block_hash(self, block_number: int) -> str | None:
        """The hash of block ``block_number`` on the current chain, None if not built yet.
        Asking by number is safe; never ask chopsticks about a hash from another chain."""
        result = self._read(self._substrate.get_block_hash, block_number)
        return None if result is None else str(result)

    def finalized_head_number(self) -> int:
        def read() -> int:
            head = self._substrate.get_chain_finalised_head()
            return int(self._substrate.get_block_header(block_hash=head)["header"]["number"])

        return self._read(read)

    def best_head_number(self) -> int:
        """The newest block's number (what inclusion is judged against)."""
        return int(self._connection.rpc("chain_getHeader", [])["number"], 16)

    def next_nonce(self, address: str) -> int:
        """The nonce the signer's next extrinsic must use: the state's plus the signer's
        extrinsics in the pool (``system_accountNextIndex``). Chopsticks matches pool
        extrinsics by the address spelled in the chain's own SS58 prefix, so it is asked in
        that spelling (asked with prefix 42 it silently ignores the pool)."""
        spelled = ss58_encode(public_key_of(address), self.chain_ss58_prefix())
        return int(self._connection.rpc("system_accountNextIndex", [spelled]))

    def chain_ss58_prefix(self) -> int:
        if self._ss58_prefix is None:
            constant = self._read(self._substrate.get_constant, "System", "SS58Prefix")
            self._ss58_prefix = int(constant.value) if constant is not None else SS58_FORMAT
        return self._ss58_prefix

    def account_nonce(self, address: str) -> int:
        """The nonce in state: how many of the account's extrinsics are in blocks."""
        return self.account_data(address)["nonce"]

    def free_balance(self, address: str) -> int:
        return self.account_data(address)["free"]

    def account_data(self, address: str) -> dict[str, int]:
        """free, frozen (what must stay) and nonce, from one 2 ms storage read."""
        account = self._read(self._substrate.query, "System", "Account", [account_param(address)])
        data = account.value["data"]
        frozen = max(int(data.get("misc_frozen", 0)), int(data.get("fee_frozen", 0)))
        return {
            "free": int(data["free"]),
            "frozen": int(data.get("frozen", frozen)),
            "nonce": int(account.value["nonce"]),
        }

    def extrinsic_limits(self) -> tuple[int, int, int]:
        """What one Normal extrinsic may hold on this runtime: its dispatch weight (reference
        time, ``System.BlockWeights``), the bytes of a block's Normal extrinsics
        (``System.BlockLength``), and the calls of one ``Utility`` batch."""

        def read() -> tuple[int, int, int]:
            weights = self._substrate.get_constant("System", "BlockWeights").value
            length = self._substrate.get_constant("System", "BlockLength").value
            batched = self._substrate.get_constant("Utility", "batched_calls_limit").value
            normal = weights["per_class"]["normal"]
            return ref_time(normal["max_extrinsic"]), int(length["max"]["normal"]), int(batched)

        return self._read(read)

    def existential_deposit(self) -> int:
        if self._existential_deposit is None:
            constant = self._read(self._substrate.get_constant, "Balances", "ExistentialDeposit")
            self._existential_deposit = int(constant.value)
        return self._existential_deposit

    def dev_fund(self, address: str, amount: int) -> int:
        """Add ``amount`` to an account's free balance by rewriting its storage (chopsticks'
        ``dev_setStorage``; nonce and other fields are kept). Dev chains only: a real node
        refuses, and then funds must be transferred. Returns the new free balance."""
        if amount <= 0:
            raise ValueError(f"amount must be positive, got {amount}")
        account = self._read(self._substrate.query, "System", "Account", [account_param(address)])
        info = account.value
        free = int(info["data"]["free"]) + amount
        entry = {
            "nonce": int(info["nonce"]),
            "consumers": int(info["consumers"]),
            "providers": max(1, int(info["providers"])),
            "sufficients": int(info["sufficients"]),
            "data": {**{k: str(v) for k, v in info["data"].items()}, "free": str(free)},
        }
        try:
            self._connection.rpc("dev_setStorage", [{"System": {"Account": [[[address], entry]]}}])
        except ChainError as exc:
            raise ChainError(
                f"cannot mint on {self._connection.url}: dev_setStorage works only on a "
                "chopsticks dev chain; transfer funds from a funded account instead"
            ) from exc
        return free
