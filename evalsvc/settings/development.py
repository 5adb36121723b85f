"""Local development: DEBUG on, SQLite unless DATABASE_URL says otherwise."""

from .base import *  # noqa: F403
from .base import SQLITE_URL, database, env, listen_databases, replica_databases

DEBUG = True
SECRET_KEY = env.str("SECRET_KEY", default="development-only-not-secret")
DATABASES = {
    "default": database(env.str("DATABASE_URL", default="") or SQLITE_URL),
    **replica_databases(),
    **listen_databases(),
}
