pytest_plugins = ["tests._aws_fixtures", "tests._kafka_fixtures", "tests._http_fixtures"]
