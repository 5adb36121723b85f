-- One database per environment, as the old Flask setup had.
CREATE DATABASE eval_prod;
CREATE DATABASE eval_staging;
CREATE DATABASE eval_dev;
CREATE DATABASE eval_test;
