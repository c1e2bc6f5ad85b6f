"""The forwarding engine against real sockets that behave like awkward HTTP/1.1 servers."""

import asyncio

import pytest

from gateway.proxy.engine import (
    ConnectFailed,
    ConnectionReset,
    PoolExhausted,
    PoolSettings,
    UpstreamPool,
    UpstreamTimeout,
)


async def raw_server(handler):
    """A TCP server on a free loopback port; handler(reader, writer) scripts the replies."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def read_request(reader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


def run(coro):
    return asyncio.run(coro)


def test_chunked_and_read_until_close_bodies():
    async def main():
        async def handler(reader, writer):
            while True:
                head = await read_request(reader)
                if b"/chunked" in head:
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                    await writer.drain()
                else:  # HTTP/1.0 style: no length, body ends when the server closes
                    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close")
                    await writer.drain()
                    writer.close()
                    return

        server, url = await raw_server(handler)
        pool = UpstreamPool(url)
        r = await pool.request(b"GET", b"/chunked", [])
        assert await r.body() == b"hello world"
        r = await pool.request(b"GET", b"/eof", [])
        assert await r.body() == b"until close"
        await pool.aclose()
        server.close()

    run(main())


def test_idle_connection_closed_by_server_is_retried_for_idempotent_requests():
    async def main():
        accepted = 0

        async def handler(reader, writer):
            nonlocal accepted
            accepted += 1
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            # keep-alive promised, but the server drops the connection right after answering
            await asyncio.sleep(0.05)
            writer.close()

        server, url = await raw_server(handler)
        pool = UpstreamPool(url)
        assert await (await pool.request(b"GET", b"/", [])).body() == b"ok"
        await asyncio.sleep(0.2)  # the pooled connection is now closed by the server
        assert await (await pool.request(b"GET", b"/", [])).body() == b"ok"
        assert accepted == 2
        await pool.aclose()
        server.close()

    run(main())


def test_read_timeout_and_connect_refused():
    async def main():
        async def silent(reader, writer):
            await read_request(reader)
            await asyncio.sleep(5)

        server, url = await raw_server(silent)
        pool = UpstreamPool(url, PoolSettings(read_timeout=0.3))
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(UpstreamTimeout):
            await pool.request(b"POST", b"/", [], b"{}")
        assert 0.25 < loop.time() - start < 1.5
        server.close()
        await pool.aclose()

        port = server.sockets[0].getsockname()[1] if server.sockets else 1
        await server.wait_closed()
        with pytest.raises(ConnectFailed):
            await UpstreamPool(f"http://127.0.0.1:{port}").request(b"GET", b"/", [])

    run(main())


def test_pool_cap_queues_then_fails_with_pool_exhausted():
    async def main():
        async def slow(reader, writer):
            while True:
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                await asyncio.sleep(0.3)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
                await writer.drain()

        server, url = await raw_server(slow)
        pool = UpstreamPool(url, PoolSettings(max_connections=2, connect_timeout=1.0))

        async def one():
            r = await pool.request(b"GET", b"/", [])
            return await r.body()

        # 4 requests through 2 connections: the last two wait for a free slot, then succeed
        assert await asyncio.gather(*(one() for _ in range(4))) == [b"x"] * 4
        assert pool.open_connections <= 2
        tight = UpstreamPool(url, PoolSettings(max_connections=1, connect_timeout=0.1))
        first = asyncio.ensure_future(tight.request(b"GET", b"/", []))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolExhausted):
            await tight.request(b"GET", b"/", [])
        await (await first).body()
        await pool.aclose()
        await tight.aclose()
        server.close()

    run(main())


def test_reset_mid_body_is_an_error_not_a_short_body():
    async def main():
        async def liar(reader, writer):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
            await writer.drain()
            writer.close()

        server, url = await raw_server(liar)
        pool = UpstreamPool(url)
        r = await pool.request(b"GET", b"/", [])
        with pytest.raises(ConnectionReset):
            await r.body()
        await pool.aclose()
        server.close()

    run(main())


def test_streamed_request_body_is_sent_chunked():
    async def main():
        received = asyncio.get_running_loop().create_future()

        async def handler(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readuntil(b"0\r\n\r\n")
            received.set_result((head, body))
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

        server, url = await raw_server(handler)
        pool = UpstreamPool(url)

        async def parts():
            yield b"abc"
            yield b"defgh"

        r = await pool.request(b"POST", b"/up", [(b"x-a", b"1")], parts())
        assert r.status == 204
        head, body = await received
        assert b"transfer-encoding: chunked" in head.lower()
        assert body == b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"
        await pool.aclose()
        server.close()

    run(main())
