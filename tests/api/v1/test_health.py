import httpx


async def test_health_is_public(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_database_and_schema(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["schema"]


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


async def set_schema_revision(revision: str) -> None:
    from sqlalchemy import text

    from app.core.db import get_engine

    async with get_engine().begin() as connection:
        await connection.execute(
            text("UPDATE alembic_version SET version_num = :revision"), {"revision": revision}
        )


async def test_ready_while_a_newer_release_has_migrated_ahead(client: httpx.AsyncClient) -> None:
    """A rolling update migrates before the old pods are gone: they stay ready; a database
    behind the code is not ready."""
    from app.core.schema_revisions import head_revision

    head = head_revision()
    assert head is not None
    try:
        await set_schema_revision("9999_from_a_newer_release")
        ahead = await client.get("/api/v1/health/ready")
        assert ahead.status_code == 200, ahead.text
        assert ahead.json()["schema"] == "9999_from_a_newer_release (newer)"
        await set_schema_revision("0001")
        behind = await client.get("/api/v1/health/ready")
        assert behind.status_code == 503
        assert "run `python -m app migrate`" in behind.json()["detail"]
    finally:
        await set_schema_revision(head)
    assert (await client.get("/api/v1/health/ready")).status_code == 200
