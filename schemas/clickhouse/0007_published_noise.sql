-- Published-tier protection (docs/PRIVACY.md): the aggregator adds keyed discrete Laplace noise
-- to every flow component's co-occurrence sum s and to every footfall count, and records the
-- noise variance (in thousandths, an integer: no floats in the warehouse) on the row. Variances
-- of independent noise add, so a query sums noise_var_milli with the values it sums and the
-- estimator's standard error includes the noise.
ALTER TABLE {db}.flow_components ADD COLUMN noise_var_milli UInt64 DEFAULT 0;
ALTER TABLE {db}.footfall_components ADD COLUMN noise_var_milli UInt64 DEFAULT 0;
