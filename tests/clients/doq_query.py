#!/usr/bin/env python3
"""A DNS over QUIC client (RFC 9250) built on aioquic, for the tests.

usage: doq_query.py HOST PORT CA_FILE SERVER_NAME HEX_QUERY [HEX_QUERY ...]

Opens one QUIC connection (ALPN "doq"), sends each query on a stream of
its own, concurrently, and prints each response as hex, one line each, in
the order the queries were given. Exits 2 when the handshake fails.
"""

import asyncio
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration


async def ask(client, query: bytes) -> bytes:
    reader, writer = await client.create_stream()
    writer.write(len(query).to_bytes(2, "big") + query)
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), timeout=10)
    length = int.from_bytes(data[:2], "big")
    if len(data) != 2 + length:
        raise RuntimeError(f"framing: length {length}, got {len(data) - 2} octets")
    return data[2:]


async def main() -> int:
    host, port, ca, server_name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    queries = [bytes.fromhex(q) for q in sys.argv[5:]]
    config = QuicConfiguration(is_client=True, alpn_protocols=["doq"], server_name=server_name)
    config.verify_mode = ssl.CERT_REQUIRED
    config.load_verify_locations(ca)
    try:
        async with connect(host, port, configuration=config) as client:
            answers = await asyncio.gather(*(ask(client, q) for q in queries))
    except (ConnectionError, asyncio.TimeoutError) as error:
        print(f"handshake or exchange failed: {error!r}", file=sys.stderr)
        return 2
    for answer in answers:
        print(answer.hex())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
