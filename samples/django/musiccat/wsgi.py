"""WSGI entry point, used by gunicorn in the production image (musiccat.wsgi:application)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "musiccat.settings")

application = get_wsgi_application()
