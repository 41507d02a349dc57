#!/usr/bin/env python3
"""A real Django REST framework + djangorestframework-simplejwt backend, in one file.

Test fixture for Portcullis. Started as a child process by the Rust integration tests:

    DJANGO_JWT_SECRET=<>=32 bytes> python3 tests/django/server.py

It migrates a throw-away sqlite database, creates the user alice (email alice@example.com,
password "secret"), listens on 127.0.0.1 (port 0 = any free port, or DJANGO_PORT) and then
prints exactly one line on stdout: "LISTENING <port>". Request logs go to stderr.

Environment:
  DJANGO_JWT_SECRET   HS256 signing key, at least 32 bytes (required)
  DJANGO_ACCESS_TTL   access token lifetime in seconds (default 300)
  DJANGO_REFRESH_TTL  refresh token lifetime in seconds (default 86400)
  DJANGO_PORT         port to listen on (default 0: the OS picks one)
  DJANGO_EXTRA_CLAIMS "1" adds "username" and "email" claims to the tokens (default: stock
                      simplejwt claims only: token_type, exp, iat, jti, user_id)

Endpoints (the trailing slash is optional on every one):
  POST /api/token/            {username, password} -> 200 {access, refresh} | 401
                              (username may also be the e-mail address)
  POST /api/token/refresh/    {refresh} -> 200 {access, refresh} (rotated; the old one is
                              blacklisted) | 401
  POST /api/token/blacklist/  {refresh} -> 200 {} | 401
  POST /api/logout/           Bearer access token -> 200 {"ok": true, "user": ...} | 401;
                              also blacklists a refresh token given in the body as
                              {refresh} or {refresh_token}
  GET  /api/me/               Bearer -> {"username", "email"}
  GET  /api/items/            Bearer -> {"items": [...], "user": username}
  GET  /api/session/          session check: Bearer of an active user -> 200 {"active": true};
                              401 once the user is blocked (SimpleJWT refuses inactive users)
  GET  /_stats/               no auth: how often each endpoint was called, and what it answered
  POST /_block/               no auth, test only: {username} -> the user is made inactive
"""

import atexit
import os
import shutil
import signal
import socketserver
import sys
import tempfile
import threading
from datetime import timedelta
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

# ---------------------------------------------------------------------------- settings

SECRET = os.environ.get("DJANGO_JWT_SECRET", "")
if len(SECRET.encode()) < 32:
    sys.stderr.write("server.py: DJANGO_JWT_SECRET must be set to at least 32 bytes\n")
    sys.exit(2)

ACCESS_TTL = int(os.environ.get("DJANGO_ACCESS_TTL", "300"))
REFRESH_TTL = int(os.environ.get("DJANGO_REFRESH_TTL", "86400"))
PORT = int(os.environ.get("DJANGO_PORT", "0"))
EXTRA_CLAIMS = os.environ.get("DJANGO_EXTRA_CLAIMS", "") == "1"

DB_DIR = tempfile.mkdtemp(prefix="portcullis-django-")


def _cleanup():
    shutil.rmtree(DB_DIR, ignore_errors=True)


atexit.register(_cleanup)
for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_sig, lambda *_: sys.exit(0))

from django.conf import settings  # noqa: E402

settings.configure(
    DEBUG=False,
    SECRET_KEY="portcullis-test-django-secret-key-not-for-production",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    USE_TZ=True,
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "rest_framework",
        "rest_framework_simplejwt.token_blacklist",
    ],
    # CommonMiddleware only to get Content-Length on responses; the URL patterns below accept
    # paths with and without the trailing slash, so no APPEND_SLASH redirects.
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    APPEND_SLASH=False,
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(DB_DIR, "db.sqlite3"),
            "OPTIONS": {"timeout": 20},
        }
    },
    # A fast hasher: this is a test fixture, and PBKDF2's 1M rounds would make each login ~1 s.
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    AUTHENTICATION_BACKENDS=[
        "django.contrib.auth.backends.ModelBackend",
        __name__ + ".EmailBackend",
    ],
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    REST_FRAMEWORK={
        "DEFAULT_AUTHENTICATION_CLASSES": [
            "rest_framework_simplejwt.authentication.JWTAuthentication",
        ],
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "DEFAULT_PARSER_CLASSES": [
            "rest_framework.parsers.JSONParser",
            "rest_framework.parsers.FormParser",
            "rest_framework.parsers.MultiPartParser",
        ],
    },
    SIMPLE_JWT={
        "SIGNING_KEY": SECRET,
        "ALGORITHM": "HS256",
        "ACCESS_TOKEN_LIFETIME": timedelta(seconds=ACCESS_TTL),
        "REFRESH_TOKEN_LIFETIME": timedelta(seconds=REFRESH_TTL),
        "ROTATE_REFRESH_TOKENS": True,
        "BLACKLIST_AFTER_ROTATION": True,
        "AUTH_HEADER_TYPES": ("Bearer",),
        "TOKEN_OBTAIN_SERIALIZER": (
            __name__ + ".ClaimsTokenObtainPairSerializer"
            if EXTRA_CLAIMS
            else "rest_framework_simplejwt.serializers.TokenObtainPairSerializer"
        ),
    },
    LOGGING={
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    },
)

import django  # noqa: E402

django.setup()

# ---------------------------------------------------------------------------- app code

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.backends import ModelBackend  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import re_path  # noqa: E402
from rest_framework.decorators import api_view, permission_classes  # noqa: E402
from rest_framework.permissions import IsAuthenticated  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework_simplejwt.exceptions import TokenError  # noqa: E402
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer  # noqa: E402
from rest_framework_simplejwt.tokens import RefreshToken  # noqa: E402
from rest_framework_simplejwt.views import (  # noqa: E402
    TokenBlacklistView,
    TokenObtainPairView,
    TokenRefreshView,
)


class EmailBackend(ModelBackend):
    """Lets the e-mail address stand in for the username (a common real-world setup)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not username or password is None:
            return None
        user = get_user_model().objects.filter(email__iexact=username).first()
        if user and user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None


class ClaimsTokenObtainPairSerializer(TokenObtainPairSerializer):
    """Only with DJANGO_EXTRA_CLAIMS=1: adds username/email claims (copied into access tokens)."""

    @classmethod
    def get_token(cls, user):
        token = super().get_token(user)
        token["username"] = user.get_username()
        token["email"] = user.email
        return token


STATS_LOCK = threading.Lock()
STATS = {}


def counted(name, view):
    """Wraps a view to count its calls and the status codes it answered, for /_stats/."""

    def wrapper(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        with STATS_LOCK:
            entry = STATS.setdefault(name, {"calls": 0, "status": {}})
            entry["calls"] += 1
            code = str(response.status_code)
            entry["status"][code] = entry["status"].get(code, 0) + 1
            entry["last_authorization"] = request.META.get("HTTP_AUTHORIZATION", "")
        return response

    wrapper.csrf_exempt = True
    return wrapper


@api_view(["POST"])
@permission_classes([IsAuthenticated])
def logout(request):
    refresh = request.data.get("refresh") or request.data.get("refresh_token")
    blacklisted = False
    if refresh:
        try:
            RefreshToken(refresh).blacklist()
            blacklisted = True
        except TokenError:
            pass
    return Response({"ok": True, "user": request.user.get_username(), "blacklisted": blacklisted})


@api_view(["GET"])
@permission_classes([IsAuthenticated])
def me(request):
    return Response({"username": request.user.get_username(), "email": request.user.email})


@api_view(["GET"])
@permission_classes([IsAuthenticated])
def items(request):
    return Response(
        {
            "items": [{"id": 1, "name": "apple"}, {"id": 2, "name": "pear"}],
            "user": request.user.get_username(),
        }
    )


@api_view(["GET"])
@permission_classes([IsAuthenticated])
def session(request):
    return Response({"active": True, "user": request.user.get_username()})


def block(request):
    import json

    try:
        username = json.loads(request.body or b"{}").get("username", "")
    except ValueError:
        return JsonResponse({"detail": "expected JSON"}, status=400)
    updated = get_user_model().objects.filter(username=username).update(is_active=False)
    return JsonResponse({"blocked": updated}, status=200 if updated else 404)


block.csrf_exempt = True


def stats(request):
    with STATS_LOCK:
        return JsonResponse(STATS, json_dumps_params={"sort_keys": True})


urlpatterns = [
    re_path(r"^api/token/?$", counted("token", TokenObtainPairView.as_view())),
    re_path(r"^api/token/refresh/?$", counted("refresh", TokenRefreshView.as_view())),
    re_path(r"^api/token/blacklist/?$", counted("blacklist", TokenBlacklistView.as_view())),
    re_path(r"^api/logout/?$", counted("logout", logout)),
    re_path(r"^api/me/?$", counted("me", me)),
    re_path(r"^api/items/?$", counted("items", items)),
    re_path(r"^api/session/?$", counted("session", session)),
    re_path(r"^_stats/?$", stats),
    re_path(r"^_block/?$", block),
]

# ---------------------------------------------------------------------------- serve


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 64


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        sys.stderr.write("django %s - %s\n" % (self.address_string(), format % args))
        sys.stderr.flush()


def main():
    call_command("migrate", verbosity=0, interactive=False, stdout=sys.stderr)
    User = get_user_model()
    User.objects.create_user("alice", email="alice@example.com", password="secret")

    server = make_server(
        "127.0.0.1",
        PORT,
        get_wsgi_application(),
        server_class=ThreadingWSGIServer,
        handler_class=QuietHandler,
    )
    # The socket is bound and listening here: connections from now on are accepted.
    sys.stdout.write("LISTENING %d\n" % server.server_port)
    sys.stdout.flush()
    sys.stderr.write(
        "django: listening on http://127.0.0.1:%d (access ttl %ds, refresh ttl %ds)\n"
        % (server.server_port, ACCESS_TTL, REFRESH_TTL)
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
