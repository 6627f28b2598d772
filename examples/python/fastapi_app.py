"""A FastAPI service that takes keyd's tokens: /usr/bin/python3 fastapi_app.py [PORT] (default 8000)"""
import sys
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
import uvicorn
import keyd_auth

app = FastAPI()


@app.exception_handler(keyd_auth.Unauthorized)
async def unauthorized(_: Request, e: keyd_auth.Unauthorized):
    return JSONResponse({"error": {"code": e.code, "message": str(e)}}, status_code=401,
                        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{e.code}"'})


@app.exception_handler(keyd_auth.Unavailable)
async def unavailable(_: Request, e: keyd_auth.Unavailable):
    return JSONResponse({"error": {"code": "keyd_unavailable", "message": str(e)}}, status_code=503)


def claims(authorization: str = Header(default="")):
    return keyd_auth.verify(authorization)


@app.get("/api/me")
def me(c: dict = Depends(claims)):
    return {"user": c["sub"]}


@app.post("/login")
async def login(request: Request):
    status, body = keyd_auth.login((await request.json())["user"])
    return JSONResponse(body, status_code=status)


@app.post("/refresh")
async def refresh(request: Request):
    status, body = keyd_auth.refresh((await request.json())["refresh_token"])
    return JSONResponse(body, status_code=status)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8000, log_level="warning")
