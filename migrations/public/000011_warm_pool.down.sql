DROP TABLE warm_schemas;
