"""A Flask service that takes keyd's tokens: /usr/bin/python3 flask_app.py [PORT] (default 5000)"""
import sys
from flask import Flask, jsonify, request
import keyd_auth

app = Flask(__name__)


@app.errorhandler(keyd_auth.Unauthorized)
def unauthorized(e):
    resp = jsonify(error={"code": e.code, "message": str(e)})
    resp.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{e.code}"'
    return resp, 401


@app.errorhandler(keyd_auth.Unavailable)
def unavailable(e):
    return jsonify(error={"code": "keyd_unavailable", "message": str(e)}), 503


@app.get("/api/me")
def me():
    claims = keyd_auth.verify(request.headers.get("Authorization"))
    return jsonify(user=claims["sub"])


@app.post("/login")
def login():
    status, body = keyd_auth.login(request.get_json()["user"])
    return jsonify(body), status


@app.post("/refresh")
def refresh():
    status, body = keyd_auth.refresh(request.get_json()["refresh_token"])
    return jsonify(body), status


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
