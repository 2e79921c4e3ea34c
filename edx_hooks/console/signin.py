"""Open edX as the console's sign-in: the OAuth2 authorization-code flow
(protocols.md, "Open edX as the sign-in for a web page"), with ``state`` and
PKCE (S256), and who may come in.

The JWT comes straight from the LMS's token endpoint in exchange for our own
client secret, so its claims are taken as they are (OpenID Connect Core
3.1.3.7): the LMS may sign it with a key we do not hold.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import urllib.parse
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..errors import SignInError  # re-exported: the handlers catch signin.SignInError

AUTHORIZE_PATH = "/oauth2/authorize"
TOKEN_PATH = "/oauth2/access_token"


@dataclass(frozen=True)
class Person:
    """Who signed in, as the LMS's JWT says."""
    username: str
    name: str = ""
    email: str = ""
    #: the LMS user's is_staff (global staff)
    administrator: bool = False


def new_state() -> str:
    return secrets.token_urlsafe(24)


def new_verifier() -> str:
    """A PKCE code verifier (RFC 7636: 43 to 128 characters)."""
    return secrets.token_urlsafe(48)


def challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_url(lms_url: str, client_id: str, redirect_uri: str, state: str,
                  verifier: str) -> str:
    """Where the browser goes to sign in at the LMS."""
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "state": state, "scope": "profile email", "code_challenge": challenge(verifier),
        "code_challenge_method": "S256"})
    return f"{lms_url}{AUTHORIZE_PATH}?{query}"


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT (header.payload.signature), not verified (see the
    module's docstring); SignInError if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        raise SignInError("the LMS answered with a token that is not a JWT")
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        found = json.loads(payload)
    except ValueError:
        raise SignInError("the LMS answered with a JWT that cannot be read") from None
    if not isinstance(found, dict) or not found.get("preferred_username"):
        raise SignInError("the LMS's JWT names no user (preferred_username)")
    return found


async def exchange(lms_url: str, client_id: str, client_secret: str, code: str,
                   redirect_uri: str, verifier: str, *, timeout: float,
                   connect_timeout: float) -> Person:
    """Trade the authorization code for a JWT; who it names."""
    body = urllib.parse.urlencode({
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "client_id": client_id, "client_secret": client_secret, "token_type": "jwt",
        "code_verifier": verifier})
    request = HTTPRequest(f"{lms_url}{TOKEN_PATH}", method="POST", body=body,
                          headers={"Content-Type": "application/x-www-form-urlencoded",
                                   "Accept": "application/json"},
                          request_timeout=timeout, connect_timeout=connect_timeout)
    try:
        answer = await AsyncHTTPClient().fetch(request, raise_error=False)
    except (OSError, HTTPClientError) as e:
        raise SignInError(f"the LMS could not be reached ({e.__class__.__name__})") from None
    if answer.code != 200:
        raise SignInError(f"the LMS refused the sign-in code ({answer.code}): check "
                          "console.client_id, console.client_secret and the application's "
                          "redirect URI")
    try:
        token = json.loads(answer.body)["access_token"]
    except (ValueError, KeyError, TypeError):
        raise SignInError("the LMS's token answer holds no access_token") from None
    found = claims(str(token))
    return Person(username=str(found["preferred_username"]), name=str(found.get("name") or ""),
                  email=str(found.get("email") or ""),
                  administrator=found.get("administrator") is True)
