"""The lake's one filesystem layer: a local folder or an object store (SPEC §16).

Every lake location is a string: a folder path as given (``lake/gold/...``) for a local lake,
an ``s3://bucket/key`` URL for one on S3. :func:`open_lake` turns ``--lake`` into a
:class:`Lake`, which does every read and write there. The library is fsspec/s3fs
(docs/storage.md says why): one filesystem object that DuckDB can ``register_filesystem``,
pyarrow wraps as ``PyFileSystem(FSSpecHandler(fs))`` and polars scans through pyarrow, so
every reader gets range requests and nothing is downloaded at run time. Configuration is the
store's own environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``AWS_PROFILE`` and the AWS config files); no vpbatch option carries a secret.

A local lake keeps its hot paths on the OS calls they always used (the writer's file,
``rename``, ``fsync``, ``flock``): the folder protocol of :mod:`vpbatch.store.writer` and
:mod:`vpbatch.store.locks` is unchanged, byte for byte.

Reading a lake (the API the readers use)
----------------------------------------
>>> lake = open_lake("s3://bucket/prefix")          # or open_lake("lake") / a Path
>>> lake.check()                                     # StoreError naming the URL if unusable
>>> from vpbatch.store import list_partitions, partition_manifest
>>> parts = list_partitions(lake, "vp_grid")         # committed builds only
>>> parts[0].part_url                                # a location lake.* understands
>>> with lake.open_input(parts[0].part_url) as fh:   # range reads
...     ...
>>> pq.ParquetFile(lake.arrow_path(url), filesystem=lake.arrow_filesystem())
>>> lake.attach(duckdb_connection)                   # then read_parquet(<location>) works
>>> lake.polars_scan([url, ...])                     # a polars LazyFrame (pyarrow dataset)

Errors of the store (no bucket, refused credentials, unreachable endpoint) become one-line
:class:`~vpbatch.errors.StoreError` messages naming the lake's URL (exit code 3).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from vpbatch.errors import ConfigError, StoreError, VpbatchError, one_line
from vpbatch.store.files import os_reason, write_file_atomic

if TYPE_CHECKING:
    import duckdb
    import polars as pl
    import pyarrow.fs as pafs
    from fsspec import AbstractFileSystem

#: Object-store schemes served here (S3 and S3-compatible servers).
SCHEMES: Final = ("s3", "s3a")
#: Bytes a read of :meth:`Lake.open_input` fetches at least (s3fs readahead), so a reader's
#: small sequential reads (a zip directory, a header) do not each cost a request. The files
#: DuckDB and pyarrow open read exactly the ranges asked for (they ask for whole column chunks
#: and footers: one hour of vp_grid of a 2M-record day moved 10 MB with no read-ahead, 23 MB
#: with 256 KiB and 60 MB with 1 MiB, in as many requests).
READ_BLOCK: Final = 256 << 10
#: Multipart part size of a streamed upload (S3's minimum is 5 MiB).
WRITE_BLOCK: Final = 32 << 20
_ENDPOINT_ENVS: Final = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_REGION_ENVS: Final = ("AWS_REGION", "AWS_DEFAULT_REGION")

def is_url(where: object) -> bool:
    """True for an object-store URL (``s3://...``), False for a folder path."""
    return isinstance(where, str) and "://" in where and not where.startswith("file://")


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or a HEAD says about one object or file."""

    location: str
    size: int
    mtime_ns: int
    etag: str = ""


class Lake:
    """A lake root: a local folder or an object-store prefix. Build it with :func:`open_lake`.

    Attributes
    ----------
    url : str
        ``s3://bucket/prefix`` or the folder as given (messages name it).
    local : bool
        True for a folder.
    root : str
        The root location (the folder, or the URL).
    """

    def __init__(self, url: str, *, local: bool) -> None:
        self.url = url
        self.local = local
        self.root = url
        self._fs: AbstractFileSystem | None = None
        self._arrow: pafs.FileSystem | None = None

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # pickles as its URL (Dask tasks, pools)
        return open_lake, (self.url,)

    # -- locations --------------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        """The local folder (ConfigError on an object store)."""
        if not self.local:
            raise ConfigError(f"{self.url}: an object-store lake has no local folder")
        return Path(self.url)

    def loc(self, *parts: str) -> str:
        """The location of ``parts`` below the root (``lake.loc('gold', 'vp_grid')``)."""
        if self.local:
            return str(Path(self.url, *parts))
        return posixpath.join(self.url, *parts)

    @property
    def bucket(self) -> str:
        return self._key(self.url)[0]

    def _key(self, location: str) -> tuple[str, str]:
        """(bucket, key) of an object-store location."""
        rest = location.split("://", 1)[1]
        bucket, _, key = rest.partition("/")
        return bucket, key

    def _fs_path(self, location: str) -> str:
        return location if self.local else location.split("://", 1)[1]

    def _location(self, fs_path: str) -> str:
        return fs_path if self.local else f"s3://{fs_path.rstrip('/')}"

    # -- the filesystem ---------------------------------------------------------------------

    @property
    def fs(self) -> AbstractFileSystem:
        """The fsspec filesystem (``LocalFileSystem`` or ``S3FileSystem``), made on first use."""
        if self._fs is None:
            if self.local:
                from fsspec.implementations.local import LocalFileSystem

                self._fs = LocalFileSystem()
            else:
                self._fs = _s3_filesystem()
        return self._fs

    @contextlib.contextmanager
    def errors(self, what: str | None = None) -> Iterator[None]:
        """Store exceptions inside become one-line :class:`StoreError` naming the lake."""
        try:
            yield
        except VpbatchError:
            raise
        except FileNotFoundError as exc:
            if not self.local and _missing_bucket(exc):
                raise StoreError(f"{self.url}: bucket '{self.bucket}' does not exist") from None
            raise
        except Exception as exc:
            if isinstance(exc, FileExistsError) or _precondition_failed(exc):
                raise  # a conditional request refused: the caller's answer, not a failure
            message = store_problem(exc)
            if message is None or self.local:
                raise
            raise StoreError(f"{what or self.url}: {message}") from None

    def check(self) -> None:
        """One request to the store: raises :class:`StoreError` when the lake is unusable.

        A folder lake is not checked here (the commands say what is missing themselves).
        """
        if self.local:
            return
        bucket, key = self._key(self.url)
        with self.errors():
            self.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)

    # -- reading ----------------------------------------------------------------------------

    def exists(self, location: str) -> bool:
        if self.local:
            return os.path.exists(location)
        with self.errors():
            return bool(self.fs.exists(self._fs_path(location)))

    def is_file(self, location: str) -> bool:
        if self.local:
            return os.path.isfile(location)
        with self.errors():
            return bool(self.fs.isfile(self._fs_path(location)))

    def list_names(self, location: str) -> list[str] | None:
        """Names directly below ``location`` (sorted), None when there is nothing there."""
        if self.local:
            try:
                return sorted(os.listdir(location))
            except (FileNotFoundError, NotADirectoryError):
                return None
        with self.errors():
            try:
                entries = self.fs.ls(self._fs_path(location), detail=False)
            except FileNotFoundError as exc:
                if _missing_bucket(exc):
                    raise
                return None
        names = sorted({posixpath.basename(str(e).rstrip("/")) for e in entries})
        return names or None

    def find(self, location: str) -> list[ObjectInfo]:
        """Every file or object below ``location`` (recursive, sorted by location)."""
        if self.local:
            found = []
            for path in sorted(Path(location).rglob("*")):
                with contextlib.suppress(OSError):
                    if path.is_file():
                        st = path.stat()
                        found.append(ObjectInfo(str(path), st.st_size, st.st_mtime_ns))
            return found
        with self.errors():
            try:
                entries = self.fs.find(self._fs_path(location), detail=True)
            except FileNotFoundError as exc:
                if _missing_bucket(exc):
                    raise
                return []
        return [ObjectInfo(self._location(name), int(info.get("size") or 0),
                           _mtime_ns(info), str(info.get("ETag", "")).strip('"'))
                for name, info in sorted(entries.items()) if info.get("type") != "directory"]

    def info(self, location: str) -> ObjectInfo:
        """Size, modification time (ns) and ETag of one file or object (FileNotFoundError)."""
        if self.local:
            st = os.stat(location)
            return ObjectInfo(location, st.st_size, st.st_mtime_ns)
        with self.errors():
            data = self.fs.info(self._fs_path(location), refresh=True)
        return ObjectInfo(location, int(data.get("size") or 0), _mtime_ns(data),
                          str(data.get("ETag", "")).strip('"'))

    def remember(self, location: str, size: int) -> None:
        """``location`` is a file of ``size`` bytes that never changes (a committed attempt's
        file): readers open it without asking the store for its size."""
        if not self.local:
            self.fs.remember(self._fs_path(location), size)

    def read_bytes(self, location: str) -> bytes:
        if self.local:
            return Path(location).read_bytes()
        with self.errors():
            return bytes(self.fs.cat_file(self._fs_path(location)))

    def read_many(self, locations: Sequence[str]) -> dict[str, bytes | Exception]:
        """Several whole files at once (concurrent GETs on an object store)."""
        if self.local or not locations:
            out: dict[str, bytes | Exception] = {}
            for location in locations:
                try:
                    out[location] = Path(location).read_bytes()
                except OSError as exc:
                    out[location] = exc
            return out
        with self.errors():
            got = self.fs.cat([self._fs_path(p) for p in locations], on_error="return")
        return {self._location(k): (v if isinstance(v, Exception) else bytes(v))
                for k, v in got.items()}

    def open_input(self, location: str) -> IO[bytes]:
        """A seekable binary file; on an object store every read is a range request."""
        if self.local:
            return open(location, "rb")
        with self.errors():
            return self.fs.open(self._fs_path(location), "rb", block_size=READ_BLOCK,  # type: ignore[no-any-return]
                                cache_type="readahead")

    def download(self, location: str, dest: Path) -> None:
        """Copy one file or object to a local file ``dest`` (its folder must exist)."""
        if self.local:
            shutil.copyfile(location, dest)
            return
        with self.errors():
            self.fs.get_file(self._fs_path(location), str(dest), chunksize=WRITE_BLOCK)

    # -- writing ----------------------------------------------------------------------------

    def put(self, location: str, data: bytes) -> None:
        """Write a whole file or object (a folder lake: parents made, temp file + rename)."""
        if self.local:
            path = Path(location)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_file_atomic(path, data)
            return
        with self.errors():
            self.fs.pipe_file(self._fs_path(location), data)

    def upload(self, source: Path, location: str) -> None:
        """Copy a local file into the lake (an object appears whole, or not at all)."""
        if self.local:
            Path(location).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, location)
            return
        with self.errors():
            self.fs.put_file(str(source), self._fs_path(location))

    def open_output(self, location: str) -> IO[bytes]:
        """A file to stream bytes into. On an object store a multipart upload that appears
        only at ``close()``; ``discard()`` (see :func:`discard_output`) drops it."""
        if self.local:
            return open(location, "wb")
        with self.errors():
            return self.fs.open(self._fs_path(location), "wb",  # type: ignore[no-any-return]
                                block_size=WRITE_BLOCK)

    def remove(self, location: str) -> None:
        """Delete one file or object (absent: nothing to do)."""
        with contextlib.suppress(FileNotFoundError):
            if self.local:
                os.unlink(location)
            else:
                with self.errors():
                    self.fs.rm_file(self._fs_path(location))

    def remove_tree(self, location: str) -> None:
        """Delete everything below ``location`` (absent: nothing to do)."""
        if self.local:
            shutil.rmtree(location, ignore_errors=True)
            return
        with self.errors(), contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._fs_path(location), recursive=True)

    # -- conditional writes (object store) ------------------------------------------------

    def create(self, location: str, data: bytes) -> str | None:
        """Create an object only if none exists (``If-None-Match: *``): its ETag, or None
        when one exists already."""
        bucket, key = self._key(location)
        try:
            with self.errors():
                out = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data,
                                      IfNoneMatch="*")
        except OSError as exc:
            if isinstance(exc, FileExistsError) or _precondition_failed(exc):
                return None
            raise
        return str(out.get("ETag", "")).strip('"')

    def replace(self, location: str, data: bytes, etag: str) -> str | None:
        """Overwrite an object only if its ETag is still ``etag`` (``If-Match``): the new
        ETag, or None when it changed or is gone."""
        bucket, key = self._key(location)
        try:
            with self.errors():
                out = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data,
                                      IfMatch=f'"{etag}"')
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or _precondition_failed(exc):
                return None
            raise
        return str(out.get("ETag", "")).strip('"')

    def delete_if(self, location: str, etag: str) -> bool:
        """Delete an object only if its ETag is still ``etag``; False when it changed."""
        bucket, key = self._key(location)
        try:
            with self.errors():
                self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=f'"{etag}"')
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or _precondition_failed(exc):
                return False
            raise
        return True

    def get(self, location: str) -> tuple[bytes, ObjectInfo] | None:
        """An object's bytes with its ETag and time, read in one request (None: absent)."""
        from fsspec.asyn import sync

        bucket, key = self._key(location)

        async def fetch() -> tuple[bytes, dict[str, Any]]:
            resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with resp["Body"] as body:
                return await body.read(), resp

        try:
            with self.errors():
                data, resp = sync(self.fs.loop, fetch)
        except FileNotFoundError:
            return None
        return data, ObjectInfo(location, len(data), _mtime_ns(resp),
                                str(resp.get("ETag", "")).strip('"'))

    def uploads(self, location: str) -> list[tuple[str, str]]:
        """Unfinished multipart uploads below ``location``: (location, upload id) pairs."""
        if self.local:
            return []
        bucket, prefix = self._key(location)
        with self.errors():
            listed = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
        return [(f"s3://{bucket}/{u['Key']}", str(u["UploadId"]))
                for u in listed.get("Uploads", [])]

    def abort_upload(self, location: str, upload_id: str) -> None:
        """Abort one unfinished multipart upload (a writer killed mid-file left it)."""
        bucket, key = self._key(location)
        with self.errors(), contextlib.suppress(FileNotFoundError):
            self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key,
                            UploadId=upload_id)

    # -- readers: pyarrow, DuckDB, polars ------------------------------------------------

    def arrow_filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem for :meth:`arrow_path` paths (range reads on a store)."""
        if self._arrow is None:
            import pyarrow.fs as pafs

            self._arrow = (pafs.LocalFileSystem() if self.local
                           else pafs.PyFileSystem(pafs.FSSpecHandler(self.fs)))
        return self._arrow

    def arrow_path(self, location: str) -> str:
        """``location`` as :meth:`arrow_filesystem` names it."""
        return os.path.abspath(location) if self.local else self._fs_path(location)

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Let DuckDB read this lake's locations (a folder needs nothing).

        The fsspec filesystem is registered with the connection, so ``read_parquet`` of an
        ``s3://`` location goes through it with range requests; DuckDB's own autoloading is
        turned off, so no extension is downloaded at run time.
        """
        if self.local:
            return
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        if not any(name in ("s3", "s3a") for name in con.list_filesystems()):
            con.register_filesystem(self.fs)

    def polars_scan(self, locations: Sequence[str]) -> pl.LazyFrame:
        """A polars LazyFrame over Parquet files of this lake (pyarrow dataset, range reads)."""
        import polars as pl
        import pyarrow.dataset as ds

        dataset = ds.dataset([self.arrow_path(p) for p in locations], format="parquet",
                             filesystem=self.arrow_filesystem())
        return pl.scan_pyarrow_dataset(dataset)


def open_lake(where: Lake | str | os.PathLike[str]) -> Lake:
    """The :class:`Lake` at ``where``: a folder path, ``file://`` path or ``s3://bucket/prefix``.

    Nothing is contacted here (see :meth:`Lake.check`).

    Raises
    ------
    ConfigError
        An unsupported scheme, or an ``s3://`` URL without a bucket.
    """
    if isinstance(where, Lake):
        return where
    text = os.fspath(where)
    if text.startswith("file://"):
        return Lake(text[len("file://"):] or "/", local=True)
    if "://" not in text:
        return Lake(text, local=True)
    scheme, rest = text.split("://", 1)
    if scheme.lower() not in SCHEMES:
        raise ConfigError(f"--lake {text}: scheme '{scheme}' is not supported; use a folder "
                          "or s3://bucket/prefix")
    rest = "/".join(part for part in rest.split("/") if part)
    if not rest:
        raise ConfigError(f"--lake {text}: no bucket; use s3://bucket/prefix")
    return Lake(f"s3://{rest}", local=False)


def lake_url(where: Lake | str | os.PathLike[str]) -> str:
    """The lake's URL or folder as a string (what messages and results show)."""
    return where.url if isinstance(where, Lake) else os.fspath(where)


def _s3_filesystem() -> AbstractFileSystem:
    """``S3FileSystem`` from the standard AWS environment (no listing cache: every listing
    asks the store, so a commit made elsewhere is seen)."""
    from vpbatch.store.s3 import S3Store

    kwargs: dict[str, Any] = {"use_listings_cache": False, "default_block_size": READ_BLOCK,
                              "default_cache_type": "none"}
    endpoint = next((os.environ[e] for e in _ENDPOINT_ENVS if os.environ.get(e)), None)
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    region = next((os.environ[e] for e in _REGION_ENVS if os.environ.get(e)), None)
    if region:
        kwargs["client_kwargs"] = {"region_name": region}
    if os.environ.get("AWS_PROFILE"):
        kwargs["profile"] = os.environ["AWS_PROFILE"]
    return S3Store(**kwargs)


def _code(exc: BaseException) -> str:
    """The S3 error code behind an s3fs OSError (``NoSuchBucket``, ...), '' if none."""
    cause = exc.__cause__ or exc.__context__
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _missing_bucket(exc: BaseException) -> bool:
    return _code(exc) == "NoSuchBucket" or "bucket does not exist" in str(exc)


def _precondition_failed(exc: BaseException) -> bool:
    return _code(exc) in ("PreconditionFailed", "412") or "pre-condition" in str(exc)


def _mtime_ns(info: dict[str, Any]) -> int:
    stamp = info.get("LastModified") or info.get("mtime")
    if stamp is None:
        return 0
    if hasattr(stamp, "timestamp"):
        return int(stamp.timestamp() * 1e9)
    return int(float(stamp) * 1e9)


def store_problem(exc: BaseException) -> str | None:
    """A one-line reason for an error of the object store, None if it is something else."""
    name = type(exc).__name__
    text = one_line(exc)
    if name in ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError"):
        return ("no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                "AWS_PROFILE)")
    if name == "ProfileNotFound":
        return f"{text} (check AWS_PROFILE)"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                "ReadTimeoutError", "ClientConnectorError", "ServerDisconnectedError"):
        endpoint = next((os.environ[e] for e in _ENDPOINT_ENVS if os.environ.get(e)), "")
        where = f" at {endpoint}" if endpoint else ""
        return f"cannot reach the object store{where} ({text})"
    if isinstance(exc, PermissionError):
        return (f"access denied ({text}); check the credentials (AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
    if name == "ClientError" or type(exc).__module__.startswith(("botocore", "aiobotocore")):
        return text
    if isinstance(exc, OSError) and _code(exc):
        return os_reason(exc)
    return None


def discard_output(fh: IO[bytes]) -> None:
    """Drop a file from :meth:`Lake.open_output` without publishing it (best effort)."""
    discard = getattr(fh, "discard", None)
    with contextlib.suppress(Exception):
        if discard is not None:
            discard()
            fh.closed = True  # type: ignore[misc]  # nothing left to flush when collected
        else:
            fh.close()
