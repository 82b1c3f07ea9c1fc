"""The Argo CD health check of a CsvIngestion (resource_customizations/csvkafka.io/CsvIngestion),
run in gopher-lua, the interpreter Argo CD uses (hack/argocd-health), over objects captured from
real ingestions."""
