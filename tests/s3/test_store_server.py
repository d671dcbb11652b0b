"""What the tests rely on from the S3 server, and the filesystem layer on it.

moto's server honours ``If-None-Match: *`` on ``PutObject`` and ``CompleteMultipartUpload``
and ``If-Match`` on ``PutObject`` and ``DeleteObject`` (checked first, as a probe: the commit
and the lease stand on these). Then :class:`vpbatch.store.fs.Lake` on it: locations, listing,
conditional writes, and one-line errors for a missing bucket, refused credentials and an
unreachable endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import settings as moto_settings

from tests.s3.conftest import make_bucket
from vpbatch.errors import ConfigError, StoreError
from vpbatch.store.fs import Lake, is_url, open_lake


def _code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def test_moto_server_honours_conditional_writes(s3_server: str, bucket: str) -> None:
    s3 = boto3.client("s3")
    first = s3.put_object(Bucket=bucket, Key="marker", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exists:
        s3.put_object(Bucket=bucket, Key="marker", Body=b"2", IfNoneMatch="*")
    assert _code(exists.value) == "PreconditionFailed"
    # a multipart upload is refused at completion when the key exists
    upload = s3.create_multipart_upload(Bucket=bucket, Key="marker")
    part = s3.upload_part(Bucket=bucket, Key="marker", UploadId=upload["UploadId"],
                          PartNumber=1, Body=b"x" * (5 << 20))
    with pytest.raises(ClientError) as completed:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="marker", UploadId=upload["UploadId"], IfNoneMatch="*",
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert _code(completed.value) == "PreconditionFailed"
    second = s3.put_object(Bucket=bucket, Key="marker", Body=b"2", IfMatch=first["ETag"])
    with pytest.raises(ClientError) as stale:
        s3.put_object(Bucket=bucket, Key="marker", Body=b"3", IfMatch=first["ETag"])
    assert _code(stale.value) == "PreconditionFailed"
    with pytest.raises(ClientError) as stale_delete:
        s3.delete_object(Bucket=bucket, Key="marker", IfMatch=first["ETag"])
    assert _code(stale_delete.value) == "PreconditionFailed"
    s3.delete_object(Bucket=bucket, Key="marker", IfMatch=second["ETag"])
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_open_lake_given_folder_url_or_bad_scheme() -> None:
    assert open_lake("lake").local and open_lake("lake").url == "lake"
    assert open_lake("file:///data/lake").url == "/data/lake"
    assert open_lake("s3://bucket//lake/").url == "s3://bucket/lake"
    assert open_lake("s3://bucket").bucket == "bucket"
    assert is_url("s3://b/x") and not is_url("lake") and not is_url("file:///x")
    with pytest.raises(ConfigError, match=r"--lake gs://b/x: scheme 'gs' is not supported"):
        open_lake("gs://b/x")
    with pytest.raises(ConfigError, match="no bucket"):
        open_lake("s3://")
    lake = open_lake("s3://bucket/lake")
    assert lake.loc("gold", "vp_grid") == "s3://bucket/lake/gold/vp_grid"
    assert open_lake(lake) is lake


def test_lake_reads_writes_and_lists_objects(lake_url: str) -> None:
    lake = open_lake(lake_url)
    lake.check()
    assert lake.list_names(lake.loc("raw")) is None
    lake.put(lake.loc("raw", "a", "one.bin"), b"one")
    lake.put(lake.loc("raw", "b.bin"), b"two")
    assert lake.list_names(lake.loc("raw")) == ["a", "b.bin"]
    assert [o.location for o in lake.find(lake.loc("raw"))] == [
        f"{lake_url}/raw/a/one.bin", f"{lake_url}/raw/b.bin"]
    assert lake.read_bytes(lake.loc("raw", "b.bin")) == b"two"
    assert lake.info(lake.loc("raw", "b.bin")).size == 3
    with lake.open_input(lake.loc("raw", "a", "one.bin")) as fh:
        fh.seek(1)
        assert fh.read() == b"ne"
    lake.remove_tree(lake.loc("raw", "a"))
    assert lake.list_names(lake.loc("raw")) == ["b.bin"]


def test_lake_conditional_create_replace_and_delete(lake_url: str) -> None:
    lake = open_lake(lake_url)
    where = lake.loc("marker.json")
    etag = lake.create(where, b"first")
    assert etag and lake.create(where, b"second") is None
    got = lake.get(where)
    assert got is not None and got[0] == b"first" and got[1].etag == etag
    newer = lake.replace(where, b"third", etag)
    assert newer and lake.replace(where, b"fourth", etag) is None
    assert not lake.delete_if(where, etag)
    assert lake.delete_if(where, newer)
    assert lake.get(where) is None and lake.replace(where, b"x", newer) is None


def test_lake_check_given_missing_bucket_names_the_url(s3_server: str) -> None:
    with pytest.raises(StoreError, match=r"^s3://no-such-bucket-4711/lake: bucket "
                                         r"'no-such-bucket-4711' does not exist$") as err:
        open_lake("s3://no-such-bucket-4711/lake").check()
    assert err.value.exit_code == 3


@pytest.fixture
def refusing_server(s3_server: str) -> Iterator[None]:
    """The server checks credentials (moto: every request authenticated; no key is known)."""
    before = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        yield
    finally:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = before


def test_lake_check_given_wrong_credentials_names_the_url(s3_server: str,
                                                          refusing_server: None) -> None:
    with pytest.raises(StoreError, match=r"^s3://some-bucket/lake: access denied \(.*\); check "
                                         r"the credentials") as err:
        Lake("s3://some-bucket/lake", local=False).check()
    assert err.value.exit_code == 3


def test_lake_check_given_unreachable_endpoint_names_the_url(
        s3_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    # botocore retries a refused connection with back-off (~8 s) before the same error
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StoreError, match=r"^s3://some-bucket/lake: cannot reach the object store "
                                         r"at http://127\.0\.0\.1:9 \(") as err:
        Lake("s3://some-bucket/lake", local=False).check()
    assert err.value.exit_code == 3
    assert "\n" not in str(err.value)


def test_buckets_of_tests_are_apart(s3_server: str) -> None:
    a, b = make_bucket(s3_server), make_bucket(s3_server)
    assert a != b and os.environ["AWS_ENDPOINT_URL"] == s3_server
