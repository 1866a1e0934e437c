async def test_smoke(api, client):
    alice = api.as_user("alice")
    r = await alice.get("/api/v1/users/me")
    assert r.status_code == 200, r.text
    r = await alice.post("/api/v1/projects", json={"key": "FLY", "name": "Fly"})
    assert r.status_code == 201, r.text
    r = await alice.get("/api/v1/projects")
    assert r.status_code == 200, r.text
    print(r.json(), r.headers)
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
