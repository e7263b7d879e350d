"""Text search (`?q=`) through an index instead of a LIKE scan of every group.

SQLite: an FTS5 table with the trigram tokenizer holds each group's `search_text`; a trigram phrase query
finds exactly the groups whose text contains the query as a substring (what the LIKE did), for queries of
three characters or more. FTS5 rows are addressed by an integer rowid, and the groups' own rowids may change
on VACUUM (the table has no INTEGER PRIMARY KEY), so `group_search_ids` gives each group a stable one.
Triggers keep both in step with `groups`, whoever writes it.

PostgreSQL: a pg_trgm GIN index on `search_text`, which the same `LIKE '%…%'` uses as it is.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SQLITE_UP = (
    "CREATE TABLE group_search_ids (rowid INTEGER PRIMARY KEY, group_id VARCHAR(36) NOT NULL UNIQUE)",
    # case_sensitive 1: search_text and the query are both case-folded in Python (domain.search_text), which
    # also folds what SQLite's ASCII-only folding would not; remove_diacritics stays off: "über" is not "uber".
    "CREATE VIRTUAL TABLE groups_search USING fts5(search_text, tokenize = 'trigram case_sensitive 1')",
    """CREATE TRIGGER groups_search_insert AFTER INSERT ON groups BEGIN
         INSERT INTO group_search_ids (group_id) VALUES (new.id);
         INSERT INTO groups_search (rowid, search_text)
           VALUES ((SELECT rowid FROM group_search_ids WHERE group_id = new.id), new.search_text);
       END""",
    """CREATE TRIGGER groups_search_update AFTER UPDATE OF search_text ON groups
       WHEN old.search_text IS NOT new.search_text BEGIN
         UPDATE groups_search SET search_text = new.search_text
           WHERE rowid = (SELECT rowid FROM group_search_ids WHERE group_id = new.id);
       END""",
    """CREATE TRIGGER groups_search_delete AFTER DELETE ON groups BEGIN
         DELETE FROM groups_search WHERE rowid = (SELECT rowid FROM group_search_ids WHERE group_id = old.id);
         DELETE FROM group_search_ids WHERE group_id = old.id;
       END""",
    "INSERT INTO group_search_ids (group_id) SELECT id FROM groups",
    """INSERT INTO groups_search (rowid, search_text)
         SELECT ids.rowid, groups.search_text FROM group_search_ids AS ids JOIN groups ON groups.id = ids.group_id""",
)

SQLITE_DOWN = (
    "DROP TRIGGER groups_search_delete",
    "DROP TRIGGER groups_search_update",
    "DROP TRIGGER groups_search_insert",
    "DROP TABLE groups_search",
    "DROP TABLE group_search_ids",
)

POSTGRESQL_UP = (
    # A trusted extension (PostgreSQL 13+): the database's owner may create it.
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_groups_search_text_trgm ON groups USING gin (search_text gin_trgm_ops)",
)

POSTGRESQL_DOWN = ("DROP INDEX ix_groups_search_text_trgm",)


def _run(statements: tuple[str, ...]) -> None:
    for statement in statements:
        op.execute(statement)


def upgrade() -> None:
    _run(SQLITE_UP if op.get_bind().dialect.name == "sqlite" else POSTGRESQL_UP)


def downgrade() -> None:
    _run(SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else POSTGRESQL_DOWN)
