-- The app DB's shared tables for Aurora MySQL 8 / MariaDB 10.11, rendered from
-- plugins/mlbatch/backends/appdb/schema.py by `mlbatch.reporting.statements.aurora_schema_sql()`
-- (tests/unit/appdb/test_hook.py keeps them in sync). Each model adds <model>_predictions:
-- see `mlbatch sql <model> --ds DATE`.

CREATE TABLE ml_label_history (
	id BIGINT NOT NULL AUTO_INCREMENT, 
	model VARCHAR(64) NOT NULL, 
	entity_key VARCHAR(255) NOT NULL, 
	old_label VARCHAR(255) COMMENT 'NULL: the key was added', 
	new_label VARCHAR(255) COMMENT 'NULL: the key was deleted', 
	sync_id VARCHAR(100) NOT NULL, 
	changed_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
)ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_ml_label_history_key ON ml_label_history (model, entity_key);

CREATE TABLE ml_label_syncs (
	sync_id VARCHAR(100) NOT NULL, 
	model VARCHAR(64) NOT NULL, 
	started_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	rows_read INTEGER NOT NULL, 
	accepted INTEGER NOT NULL, 
	rejected INTEGER NOT NULL, 
	inserted INTEGER NOT NULL, 
	updated INTEGER NOT NULL, 
	deleted INTEGER NOT NULL, 
	content_hash VARCHAR(64) NOT NULL, 
	verdict VARCHAR(32) NOT NULL COMMENT 'checked, blocked, applied, no_change', 
	message TEXT, 
	snapshot_uri VARCHAR(1024) COMMENT 'labels parquet this sync produced, if it changed any', 
	PRIMARY KEY (sync_id)
)ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_ml_label_syncs_model ON ml_label_syncs (model, finished_at);

CREATE TABLE ml_labels (
	model VARCHAR(64) NOT NULL, 
	entity_key VARCHAR(255) NOT NULL, 
	label VARCHAR(255) NOT NULL, 
	sync_id VARCHAR(100) NOT NULL COMMENT 'sync that last wrote this row', 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (model, entity_key)
)ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE ml_model_flags (
	model VARCHAR(64) NOT NULL, 
	version VARCHAR(64) NOT NULL, 
	flag VARCHAR(32) NOT NULL COMMENT 'degraded', 
	note TEXT NOT NULL, 
	flagged_at DATETIME NOT NULL, 
	PRIMARY KEY (model, version, flag)
)ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE ml_model_versions (
	model VARCHAR(64) NOT NULL, 
	version VARCHAR(64) NOT NULL, 
	family VARCHAR(32) NOT NULL, 
	status VARCHAR(16) NOT NULL COMMENT 'candidate, pending_approval, production, rejected, retired', 
	metric VARCHAR(32) NOT NULL, 
	value DOUBLE NOT NULL, 
	metrics_json TEXT NOT NULL, 
	artifact_uri VARCHAR(1024) NOT NULL, 
	lineage_json TEXT NOT NULL, 
	reason TEXT COMMENT 'why the gate promoted or rejected it', 
	created_at DATETIME NOT NULL, 
	decided_at DATETIME, 
	PRIMARY KEY (model, version)
)ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_ml_model_versions_status ON ml_model_versions (model, status);

CREATE TABLE ml_publish_log (
	model VARCHAR(64) NOT NULL, 
	ds DATE NOT NULL, 
	model_version VARCHAR(64) NOT NULL, 
	rows_published INTEGER NOT NULL, 
	checksum VARCHAR(64) NOT NULL, 
	run_id VARCHAR(250) NOT NULL, 
	published_at DATETIME NOT NULL, 
	PRIMARY KEY (model, ds)
)ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE ml_realized_performance (
	model VARCHAR(64) NOT NULL, 
	model_version VARCHAR(64) NOT NULL, 
	ds DATE NOT NULL, 
	metric VARCHAR(32) NOT NULL, 
	value DOUBLE COMMENT 'NULL: not defined on these rows (e.g. AUC with one class)', 
	n_labelled INTEGER NOT NULL, 
	ci_low DOUBLE, 
	ci_high DOUBLE, 
	measured_at DATETIME NOT NULL, 
	label_sync_id VARCHAR(100) NOT NULL COMMENT 'sync whose labels were measured', 
	alerted_at DATETIME COMMENT 'when a degradation alert named this row (one alert per row)', 
	PRIMARY KEY (model, model_version, ds, metric)
)ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_ml_realized_performance_ds ON ml_realized_performance (model, ds);
