"""A real FTP server on loopback for tests: anonymous, passive, binary, serving a dict of files.

Only what mirrors' FTP servers answer the poller and libcurl (dnf's librepo) with: USER/PASS,
PWD, CWD (absolute or relative), TYPE, SIZE, MDTM, EPSV/PASV, RETR, QUIT; anything else gets
502. Files are keyed by absolute path (``/sme/project/...``).
`epsv = False` makes it answer EPSV with 500, as old servers do, so PASV is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import time
from dataclasses import dataclass, field


@dataclass
class FtpServer:
    files: dict[str, bytes] = field(default_factory=dict)  # "/sme/path" -> body
    mtimes: dict[str, float] = field(default_factory=dict)
    epsv: bool = True
    busy: bool = False  # answer every login with 421, as a server at its user limit does
    commands: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    def url(self, root: str = "/sme/") -> str:
        return f"ftp://127.0.0.1:{self.port}{root}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _is_dir(self, path: str) -> bool:
        prefix = path if path.endswith("/") else path + "/"
        return any(k.startswith(prefix) for k in self.files)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        listener: asyncio.Server | None = None
        cwd = "/"

        def resolve(arg: str) -> str:
            path = arg if arg.startswith("/") else cwd.rstrip("/") + "/" + arg
            return posixpath.normpath(path) if path != "/" else "/"

        def send(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await data.put((r, w))

        send("220-loopback FTP for tests")
        send("220 ready")
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                cmd, _, arg = raw.decode().strip().partition(" ")
                cmd = cmd.upper()
                self.commands.append(f"{cmd} {arg}".strip())
                if cmd in ("SIZE", "MDTM", "RETR"):
                    arg = resolve(arg)
                if cmd == "USER":
                    send("331 password please")
                elif cmd == "PASS":
                    send("421 too many users, try later" if self.busy else "230 logged in")
                elif cmd == "TYPE":
                    send("200 type set")
                elif cmd == "SIZE":
                    body = self.files.get(arg)
                    send(f"213 {len(body)}" if body is not None else "550 no such file")
                elif cmd == "MDTM":
                    if arg in self.files:
                        ts = self.mtimes.get(arg, 1_700_000_000.0)
                        send("213 " + time.strftime("%Y%m%d%H%M%S", time.gmtime(ts)))
                    else:
                        send("550 no such file")
                elif cmd == "PWD":
                    send(f'257 "{cwd}" is the current directory')
                elif cmd == "CWD":
                    target = resolve(arg)
                    if target == "/" or self._is_dir(target):
                        cwd = target
                        send("250 ok")
                    else:
                        send("550 no such directory")
                elif cmd in ("EPSV", "PASV"):
                    if cmd == "EPSV" and not self.epsv:
                        send("500 EPSV not understood")
                        continue
                    if listener is not None:
                        listener.close()
                    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
                    port = listener.sockets[0].getsockname()[1]
                    if cmd == "EPSV":
                        send(f"229 Entering Extended Passive Mode (|||{port}|)")
                    else:
                        # An address that is not ours: the client must not follow it.
                        send(f"227 Entering Passive Mode (203,0,113,9,{port // 256},{port % 256})")
                elif cmd == "RETR":
                    body = self.files.get(arg)
                    if body is None:
                        send("550 no such file")
                        continue
                    send("150 opening data connection")
                    await writer.drain()
                    _, w = await asyncio.wait_for(data.get(), 5)
                    with contextlib.suppress(ConnectionError):
                        w.write(body)
                        await w.drain()
                    w.close()
                    send("226 transfer complete")
                elif cmd == "QUIT":
                    send("221 bye")
                    return
                else:
                    send("502 not implemented")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            return
        finally:
            if listener is not None:
                listener.close()
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
