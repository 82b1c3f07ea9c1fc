"""The types of a file's columns and the schema its rows are written with (Avro, JSON Schema),
registered in a Schema Registry once per ingestion."""
