"""The broker's state file (``broker.persistence``): its SQLite tables, and the columns added since the first
version, each added on start to a state file written before it (``StateStore._migrate``), with defaults that keep
the old meaning."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (client_id TEXT PRIMARY KEY, username TEXT);
CREATE TABLE IF NOT EXISTS subscriptions (client_id TEXT, filter TEXT, qos INTEGER, PRIMARY KEY (client_id, filter));
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY, client_id TEXT, topic TEXT, payload BLOB, qos INTEGER, retain INTEGER,
    packet_id INTEGER, released INTEGER DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pending_by_client ON pending (client_id, id);
CREATE TABLE IF NOT EXISTS incoming_qos2 (client_id TEXT, packet_id INTEGER, PRIMARY KEY (client_id, packet_id));
CREATE TABLE IF NOT EXISTS retained (topic TEXT PRIMARY KEY, payload BLOB, qos INTEGER);
CREATE TABLE IF NOT EXISTS wills (
    client_id TEXT PRIMARY KEY, topic TEXT, payload BLOB, qos INTEGER, retain INTEGER, properties BLOB,
    expiry INTEGER, due_at REAL
);
"""
#: Columns added since the first schema, each added to a state file written before it (defaults keep the old
#: meaning): $share, then MQTT 5's session expiry, subscription options and message properties.
ADDED_COLUMNS = (
    ("pending", "share", "ALTER TABLE pending ADD COLUMN share TEXT"),
    # the Session Expiry Interval (NULL: a 3.1.1 session, never expires) and, once its client went away, the
    # wall-clock time it ends (NULL while connected, or when the broker stopped with it connected)
    ("sessions", "expiry", "ALTER TABLE sessions ADD COLUMN expiry INTEGER"),
    ("sessions", "expires_at", "ALTER TABLE sessions ADD COLUMN expires_at REAL"),
    # No Local (0x04), Retain As Published (0x08), Retain Handling (bits 4-5), as in SUBSCRIBE's options byte
    ("subscriptions", "options", "ALTER TABLE subscriptions ADD COLUMN options INTEGER DEFAULT 0"),
    # a message's MQTT 5 part (broker.sessions.V5Properties): forwarded property fields, wall-clock expiry
    # (NULL: never), publisher (for No Local), RETAIN as published
    ("pending", "properties", "ALTER TABLE pending ADD COLUMN properties BLOB"),
    ("pending", "expires_at", "ALTER TABLE pending ADD COLUMN expires_at REAL"),
    ("pending", "origin", "ALTER TABLE pending ADD COLUMN origin TEXT"),
    ("pending", "published_retain", "ALTER TABLE pending ADD COLUMN published_retain INTEGER DEFAULT 0"),
    # a subscription's MQTT 5 Subscription Identifier (NULL: none)
    ("subscriptions", "identifier", "ALTER TABLE subscriptions ADD COLUMN identifier INTEGER"),
    # a retained message's MQTT 5 part, as for pending
    ("retained", "properties", "ALTER TABLE retained ADD COLUMN properties BLOB"),
    ("retained", "expires_at", "ALTER TABLE retained ADD COLUMN expires_at REAL"),
    ("retained", "origin", "ALTER TABLE retained ADD COLUMN origin TEXT"),
    ("retained", "published_retain", "ALTER TABLE retained ADD COLUMN published_retain INTEGER DEFAULT 0"),
    # the will of a client connected when the state was written (due_at NULL): the delay its will waits once its
    # connection closes (min(Will Delay Interval, Session Expiry Interval); 0: none, a 3.1.1 will)
    ("wills", "delay", "ALTER TABLE wills ADD COLUMN delay INTEGER"),
)
