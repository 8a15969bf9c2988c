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

-- Seed users: the same ids, names and roles as the example app's own user table
-- (docker/app/app.py), so the user the gateway signs in is the user the app's user_loader
-- loads. THE PASSWORDS ARE PUBLIC ("<username>-demo"; bcrypt 5.0.0, cost 12): change them
-- before this database holds anything real:
--   python -c 'import bcrypt,getpass; print(bcrypt.hashpw(getpass.getpass().encode(), bcrypt.gensalt(12)).decode())'
--   UPDATE users SET password = '<hash>' WHERE username = 'alice';
INSERT INTO users (id, username, password, role, is_active) VALUES
    (1, 'alice',  '$2b$12$oVxjJXOv0NYb6iKoGSmWgOgRFDn3P6jFeHsCf2oDiQQiJkNxNwLAC', 'admin', TRUE),
    (2, 'bob',    '$2b$12$pgY2t8K7Y/WJ8krbk6bJvea4.JUTUEij/jAxthnFExtxoa6QoPM7S', 'user',  TRUE),
    (3, 'jürgen', '$2b$12$bLQMC3Qz3/xALZhY8c9osOhjqR7iK8ymgTRsHc.2LxyReL8xfUX62', 'user',  TRUE),
    (4, 'carol',  '$2b$12$.tnF/ddtnNNVLoTKBhwixuDb594Pex2S36GurpElT8JaD478t/cJW', 'user',  FALSE)
ON CONFLICT (username) DO NOTHING;
SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users));
