"""The storage contract, run against every backend: a local folder, Supabase, memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contracts.storage_contract import StorageContract
from vidpipe.storage import LocalFolderStorage, SupabaseStorage, VideoStorage
from vidpipe.testing import FakeSupabaseStorage, MemoryStorage


class TestLocalFolderStorage(StorageContract):
    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[VideoStorage]:
        storage = LocalFolderStorage(tmp_path / "videos")
        yield storage
        await storage.aclose()


class TestSupabaseStorage(StorageContract):
    """The real SupabaseStorage client, over the shipped storage-api fake."""

    @pytest.fixture
    async def storage(self) -> AsyncIterator[VideoStorage]:
        storage: SupabaseStorage = FakeSupabaseStorage().storage()
        yield storage
        await storage.aclose()


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    async def storage(self) -> AsyncIterator[VideoStorage]:
        storage = MemoryStorage()
        yield storage
        await storage.aclose()
