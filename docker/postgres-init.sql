-- The databases of the production profile (configs/profiles/production.yaml,
-- postgres.databases), created by the postgres image the first time it starts on an empty
-- data volume (docker-compose.yml mounts this file into /docker-entrypoint-initdb.d/).
-- `make prod-up` creates the same databases through postgres.admin_url instead. The schemas
-- come later: `mlflow db upgrade` and `prefect server database upgrade` (the mlflow and
-- prefect-server services run them on every start); Feast's SQL registry makes its tables
-- on first use. tests/unit/test_compose.py keeps this list equal to the profile's.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE feast;
