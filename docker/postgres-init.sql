-- Extra databases of the stack (the image creates "airflow" from POSTGRES_DB).
CREATE DATABASE mlflow;
CREATE DATABASE warehouse;
