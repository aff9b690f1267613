"""The Microsoft Graph adapter: the only place that talks to Graph or knows msgraph-sdk's exceptions.

`gateway` owns the client, the error mapping, raw JSON reads and `$batch`; every other module is named after
what it reads or writes. Import from the module that defines a name: the package re-exports nothing.
"""
