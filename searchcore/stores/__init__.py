"""Vector stores: where the embeddings live and how they are searched.

* :mod:`.base`: the :class:`VectorStore` protocol, filters and results, and how a location
  names its store (a folder, or a Milvus URI / Milvus Lite ``*.db`` file);
* :mod:`.hnsw`: the hnswlib store over an index folder;
* :mod:`.manifest`: the index folder's manifest, its commits and clean-up;
* :mod:`.milvus`: the Milvus store (a server, or Milvus Lite embedded).

Anything in searchcore may import it; hnswlib and pymilvus load when a store does.
"""
