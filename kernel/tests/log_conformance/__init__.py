"""Message-log conformance tests: one suite, run against every configured backend."""
