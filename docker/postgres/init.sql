-- Legacy user table shaped like WhaleFall's `users` (Flask-SQLAlchemy model + Flask-Bcrypt),
-- so the gateway's [login.database] backend can be tried against the schema it will meet.
-- Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d).

CREATE TABLE IF NOT EXISTS users (
    id          SERIAL PRIMARY KEY,
    username    VARCHAR(255) NOT NULL UNIQUE,
    -- Flask-Bcrypt output: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(12)).decode() -> $2b$12$...
    password    VARCHAR(255) NOT NULL,
    role        TEXT NOT NULL DEFAULT 'user',
    is_active   BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_login  TIMESTAMPTZ
);

-- Seed admin. Password: "change-me-admin" (generated with python bcrypt 5.0.0, cost 12).
-- It is public, so change it before this database holds anything real:
--   python -c 'import bcrypt,getpass; print(bcrypt.hashpw(getpass.getpass().encode(), bcrypt.gensalt(12)).decode())'
--   UPDATE users SET password = '<hash>' WHERE username = 'admin';
INSERT INTO users (username, password, role, is_active)
VALUES ('admin', '$2b$12$heBMYF1pqC4nBBMcc7Rv6e.DcjWinkNU/kZjKsl5MjBQCnmXMgCu6', 'admin', TRUE)
ON CONFLICT (username) DO NOTHING;
