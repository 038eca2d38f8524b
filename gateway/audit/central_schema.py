"""The SQL of the central audit store, for a database administrator to apply.

The gateway never creates tables there. The database itself keeps history append-only whatever
a (compromised) gateway sends: its role gets only INSERT and SELECT; every table refuses UPDATE,
DELETE and TRUNCATE; `(origin, seq)` is unique and entries must be contiguous; and a checkpoint
is accepted only if its size is larger than the last for its origin, equals the number of
entries held for it, and its root equals the RFC 9162 root the database computes itself from
those entries (a compact range of subtree hashes kept per origin by a trigger). A rewritten,
truncated or forked log therefore cannot add a checkpoint, and the shipment that carried it is
rolled back whole. A log whose origin names an epoch (`{writer}/{epoch}`) is accepted only if
its first entry chains to the final checkpoint of the last log its writer has in the store
(`epoch.started`: size, root, note and its SHA-256), or it is the writer's first; a log with a
successor takes no more entries. Signatures are checked by the witness (`gateway audit
witness`), which holds its own role and key.
"""

from __future__ import annotations

import re

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

TABLES = """
CREATE TABLE audit_origins (
    origin text PRIMARY KEY,
    verifier text NOT NULL,                 -- the log's verifier key as first shipped
    created timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_entries (
    origin text NOT NULL REFERENCES audit_origins (origin),
    seq bigint NOT NULL CHECK (seq >= 0),
    entry bytea NOT NULL,                   -- the canonical bytes, exactly as in `entries`
    received timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, seq)
);

CREATE TABLE audit_sealed (
    origin text NOT NULL REFERENCES audit_origins (origin),
    -- a path inside the audit directory, as the entries name it (e.g. sealed/000000.seal)
    file text NOT NULL CHECK (file ~ '^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$'),
    "offset" bigint NOT NULL CHECK ("offset" >= 0),
    data bytea NOT NULL,                    -- the file's bytes from offset, as on disk
    PRIMARY KEY (origin, file, "offset")
);

CREATE TABLE audit_checkpoints (
    origin text NOT NULL REFERENCES audit_origins (origin),
    size bigint NOT NULL CHECK (size > 0),
    root bytea NOT NULL CHECK (length(root) = 32),
    note bytea NOT NULL,                    -- the signed checkpoint note
    received timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, size)
);

CREATE TABLE audit_cosignatures (
    origin text NOT NULL,
    size bigint NOT NULL,
    witness text NOT NULL,                  -- the cosigner's key name
    signature text NOT NULL,                -- its C2SP tlog-cosignature note signature line
    received timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, size, witness),
    FOREIGN KEY (origin, size) REFERENCES audit_checkpoints (origin, size)
);

CREATE TABLE audit_refusals (
    id bigserial PRIMARY KEY,
    origin text NOT NULL,
    size bigint,
    refused_by text NOT NULL,
    reason text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_refusals_origin ON audit_refusals (origin, id);

-- One row per log whose origin names an epoch (`{writer}/{epoch}`), kept by the triggers below
-- only: the log it chains to (NULL: its writer's first) and that log's final size.
CREATE TABLE audit_epochs (
    origin text PRIMARY KEY REFERENCES audit_origins (origin),
    writer text NOT NULL,
    previous text UNIQUE REFERENCES audit_origins (origin),
    previous_size bigint
);

-- Kept by the triggers below only: nobody is granted anything on it.
CREATE TABLE audit_frontier (
    origin text PRIMARY KEY REFERENCES audit_origins (origin),
    size bigint NOT NULL,
    hashes bytea[] NOT NULL                 -- full-subtree roots, largest first
);
"""

FUNCTIONS = r"""
CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit history is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE FUNCTION audit_entry_appended() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    f audit_frontier%ROWTYPE;
    h bytea;
    n bigint;
BEGIN
    SELECT * INTO f FROM audit_frontier WHERE origin = NEW.origin FOR UPDATE;
    IF NOT FOUND THEN
        f.origin := NEW.origin; f.size := 0; f.hashes := '{}';
        INSERT INTO audit_frontier VALUES (f.origin, 0, '{}');
    END IF;
    IF NEW.seq <> f.size THEN
        RAISE EXCEPTION 'entry % of origin % refused: the store holds % entries (no gaps)',
            NEW.seq, NEW.origin, f.size USING ERRCODE = 'check_violation';
    END IF;
    h := sha256('\x00'::bytea || NEW.entry);
    n := f.size;
    WHILE n % 2 = 1 LOOP
        h := sha256('\x01'::bytea || f.hashes[cardinality(f.hashes)] || h);
        f.hashes := f.hashes[1:cardinality(f.hashes) - 1];
        n := n / 2;
    END LOOP;
    UPDATE audit_frontier SET size = f.size + 1, hashes = f.hashes || h
        WHERE origin = NEW.origin;
    RETURN NEW;
END $$;

-- The writer a log's origin belongs to when the origin names an epoch, else NULL.
CREATE FUNCTION audit_epoch_writer(origin text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT substring(origin FROM '^(.+)/[0-9]{4}-(?:[0-9]{2}-[0-9]{2}|W[0-9]{2}|[0-9]{2})$')
$$;

-- A closed log takes no more entries; an epoch's first entry must chain to the final
-- checkpoint of the last log its writer has here (`epoch.started` names it: origin, size, root,
-- the note and its SHA-256), unless it is the writer's first log in this store.
CREATE FUNCTION audit_entry_chained() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    own text := audit_epoch_writer(NEW.origin);
    successor text;
    first jsonb;
    link jsonb;
    prev text;
    last audit_checkpoints%ROWTYPE;
    held bigint;
    named bigint;
BEGIN
    SELECT origin INTO successor FROM audit_epochs WHERE previous = NEW.origin;
    IF FOUND THEN
        RAISE EXCEPTION 'entry % of origin % refused: that log was closed when % started',
            NEW.seq, NEW.origin, successor USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.seq <> 0 OR own IS NULL THEN
        RETURN NEW;
    END IF;
    BEGIN
        first := convert_from(NEW.entry, 'UTF8')::jsonb;
    EXCEPTION WHEN others THEN
        first := NULL;
    END;
    IF jsonb_typeof(first) = 'object' AND first->>'type' = 'epoch.started'
            AND jsonb_typeof(first->'previous') = 'object' THEN
        link := first->'previous';
    END IF;
    IF link IS NULL THEN
        IF EXISTS (SELECT 1 FROM audit_epochs e WHERE e.writer = own)
                OR EXISTS (SELECT 1 FROM audit_entries e WHERE e.origin = own) THEN
            RAISE EXCEPTION 'epoch % refused: its first entry names no previous checkpoint, but '
                'the store holds earlier logs of %: an epoch must chain to the last of them',
                NEW.origin, own USING ERRCODE = 'check_violation';
        END IF;
        INSERT INTO audit_epochs VALUES (NEW.origin, own, NULL, NULL);
        RETURN NEW;
    END IF;
    prev := link->>'origin';
    IF prev IS NULL OR (prev <> own AND audit_epoch_writer(prev) IS DISTINCT FROM own) THEN
        RAISE EXCEPTION 'epoch % refused: it chains to %, not to a log of %',
            NEW.origin, coalesce(prev, 'nothing'), own USING ERRCODE = 'check_violation';
    END IF;
    SELECT origin INTO successor FROM audit_epochs WHERE previous = prev;
    IF FOUND THEN
        RAISE EXCEPTION 'epoch % refused: % already has a successor here (%)',
            NEW.origin, prev, successor USING ERRCODE = 'check_violation';
    END IF;
    SELECT * INTO last FROM audit_checkpoints WHERE origin = prev ORDER BY size DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'epoch % refused: the store holds no checkpoint of %, which it chains to',
            NEW.origin, prev USING ERRCODE = 'check_violation';
    END IF;
    SELECT coalesce(max(seq) + 1, 0) INTO held FROM audit_entries WHERE origin = prev;
    BEGIN
        named := (link->>'size')::bigint;
        IF named IS DISTINCT FROM last.size OR held <> last.size
                OR decode(link->>'root', 'base64') IS DISTINCT FROM last.root
                OR link->>'note_sha256' IS DISTINCT FROM encode(sha256(last.note), 'hex')
                OR convert_to(link->>'note', 'UTF8') IS DISTINCT FROM last.note THEN
            named := coalesce(named, -1);
        ELSE
            named := NULL;
        END IF;
    EXCEPTION WHEN others THEN
        named := -1;
    END;
    IF named IS NOT NULL THEN
        RAISE EXCEPTION 'epoch % refused: its epoch.started entry names checkpoint size % of %, '
            'not its final checkpoint (size %, % entries held)', NEW.origin, named, prev,
            last.size, held USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO audit_epochs VALUES (NEW.origin, own, prev, last.size);
    RETURN NEW;
END $$;

CREATE FUNCTION audit_checkpoint_added() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    f audit_frontier%ROWTYPE;
    last bigint;
    r bytea;
BEGIN
    SELECT * INTO f FROM audit_frontier WHERE origin = NEW.origin FOR UPDATE;
    SELECT max(size) INTO last FROM audit_checkpoints WHERE origin = NEW.origin;
    IF last IS NOT NULL AND NEW.size <= last THEN
        RAISE EXCEPTION 'checkpoint of size % for origin % refused: not larger than the last (%)',
            NEW.size, NEW.origin, last USING ERRCODE = 'check_violation';
    END IF;
    IF NOT FOUND OR f.size <> NEW.size THEN
        RAISE EXCEPTION 'checkpoint of size % for origin % refused: the store holds % entries',
            NEW.size, NEW.origin, coalesce(f.size, 0) USING ERRCODE = 'check_violation';
    END IF;
    r := f.hashes[cardinality(f.hashes)];
    FOR i IN REVERSE cardinality(f.hashes) - 1 .. 1 LOOP
        r := sha256('\x01'::bytea || f.hashes[i] || r);
    END LOOP;
    IF r <> NEW.root THEN
        RAISE EXCEPTION 'checkpoint of size % for origin % refused: its root is not the root of '
            'the entries held (a rewritten or forked log)', NEW.size, NEW.origin
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
"""

TRIGGERS_ON = (
    "audit_origins",
    "audit_entries",
    "audit_sealed",
    "audit_checkpoints",
    "audit_cosignatures",
    "audit_refusals",
    "audit_epochs",
)


# Epoch keys, wrapped as in the keys directory: apart from history, under a role of its own that
# may delete them (retention and `gateway audit shred` delete here too). No append-only trigger.
KEYS_TABLE = """
CREATE TABLE audit_epoch_keys (
    origin text PRIMARY KEY,                -- the epoch's origin, {writer}/{epoch}
    wrapped bytea NOT NULL CHECK (length(wrapped) = 40),  -- RFC 3394 under the sealing key
    stored timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON audit_epoch_keys FROM PUBLIC;
"""


def schema_sql(role: str, witness_role: str | None = None, keys_role: str | None = None) -> str:
    """The whole script: tables, indexes, triggers and GRANTs for the gateway's role (and the
    witness's, and with `keys_role` the deletable epoch-key table and its role). Raises
    ValueError for a role name that is not a plain identifier."""
    for name in filter(None, (role, witness_role, keys_role)):
        if not ROLE_NAME.match(name):
            raise ValueError(f"role {name!r} must be a lower-case SQL identifier")
    parts = ["BEGIN;", TABLES, FUNCTIONS]
    for table in TRIGGERS_ON:
        parts.append(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}\n"
            "    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();\n"
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}\n"
            "    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();"
        )
    parts.append(
        "CREATE TRIGGER audit_entries_contiguous BEFORE INSERT ON audit_entries\n"
        "    FOR EACH ROW EXECUTE FUNCTION audit_entry_appended();\n"
        "CREATE TRIGGER audit_entries_epoch_chained BEFORE INSERT ON audit_entries\n"
        "    FOR EACH ROW EXECUTE FUNCTION audit_entry_chained();\n"
        "CREATE TRIGGER audit_checkpoints_consistent BEFORE INSERT ON audit_checkpoints\n"
        "    FOR EACH ROW EXECUTE FUNCTION audit_checkpoint_added();\n"
        "REVOKE ALL ON audit_frontier, audit_epochs FROM PUBLIC;"
    )
    parts.append(
        f"-- the gateways' role: append and read, nothing else\n"
        f"GRANT SELECT, INSERT ON audit_origins, audit_entries, audit_sealed, audit_checkpoints "
        f"TO {role};\n"
        f"GRANT SELECT ON audit_cosignatures, audit_refusals TO {role};"
    )
    if witness_role:
        parts.append(
            f"-- the witness's role: read everything, add cosignatures and refusals\n"
            f"GRANT SELECT ON audit_origins, audit_entries, audit_sealed, audit_checkpoints "
            f"TO {witness_role};\n"
            f"GRANT SELECT, INSERT ON audit_cosignatures, audit_refusals TO {witness_role};\n"
            f"GRANT USAGE ON SEQUENCE audit_refusals_id_seq TO {witness_role};"
        )
    if keys_role:
        parts.append(
            KEYS_TABLE + f"-- the epoch keys' role: copy, read and delete keys, nothing else\n"
            f"GRANT SELECT, INSERT, DELETE ON audit_epoch_keys TO {keys_role};"
        )
    parts.append("COMMIT;\n")
    return "\n".join(parts)
