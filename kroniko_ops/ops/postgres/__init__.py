"""The maintenance tools over a PostgreSQL store, beside the file store's: ``fsck`` of a URL
(:mod:`.fsck`), ``migrate`` both ways and ``mirror`` (:mod:`.transfer`), and the dispatch of a
command's target, folder or URL, to the right one (:mod:`.tools`). psycopg is imported only when
a URL is named (``pip install 'kroniko-ops[postgres]'``)."""
