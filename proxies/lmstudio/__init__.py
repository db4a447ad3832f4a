"""The LM Studio face (1234): translation in `translate`, the NinjaAPI in `views`."""
