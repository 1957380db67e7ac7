"""The database: tables (`models`), engine and sessions (`engine`), migrations (`migrate`)."""
