import logging
import socket

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from .forms import AlbumForm
from .models import Album

logger = logging.getLogger(__name__)

VISITS_KEY = "visits"


def _count_visit():
    """Increments a page-view counter kept in Redis; None when Redis is unavailable."""
    try:
        cache.add(VISITS_KEY, 0, timeout=None)
        return cache.incr(VISITS_KEY)
    except Exception as exc:  # the page still works without Redis
        logger.warning("visit counter unavailable: %s", exc)
        return None


@require_http_methods(["GET", "POST"])
def index(request):
    if request.method == "POST":
        form = AlbumForm(request.POST)
        if form.is_valid():
            album = form.save()
            logger.info("added album %s by %s", album, album.artist)
            return redirect("index")  # POST/redirect/GET: a reload does not add it twice
    else:
        form = AlbumForm()
    albums = Album.objects.select_related("artist")
    return render(
        request,
        "catalog/index.html",
        {
            "albums": albums,
            "form": form,
            "visits": _count_visit(),
            "hostname": socket.gethostname(),
            "debug_mode": settings.DEBUG,
        },
    )


def _error(exc):
    text = str(exc).strip().splitlines()
    return f"error: {type(exc).__name__}" + (f": {text[0][:200]}" if text else "")


@never_cache
@require_GET
def health(request):
    """Readiness/liveness endpoint: 200 when PostgreSQL and Redis both answer, else 503."""
    checks = {}

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = _error(exc)

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = _error(exc)
    finally:
        client.close()

    failed = [name for name, result in checks.items() if result != "ok"]
    if failed:
        logger.warning("health check failed: %s", checks)
        return JsonResponse({"status": "error", "failed": failed, **checks}, status=503)
    return JsonResponse({"status": "ok", **checks})
