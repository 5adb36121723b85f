"""The test suite: DATABASE_TEST_URL (SQLite when unset), fast hashing, a local cache."""

from .base import *  # noqa: F403
from .base import BASE_DIR, database, env

DEBUG = True
TESTING = True  # names the environment, as the old config did; no code path reads it
SECRET_KEY = env.str("SECRET_KEY", default="testing-only-not-secret")
DATABASES = {
    "default": database(
        env.str("DATABASE_TEST_URL", default="") or f"sqlite:///{BASE_DIR / 'db.test.sqlite3'}"
    )
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
