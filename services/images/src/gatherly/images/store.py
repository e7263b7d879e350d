"""Tables of the images service and the queries that need SQL."""

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from gatherly.kernel.tables import kernel_tables
from gatherly.kernel.uow import UnitOfWork

metadata = MetaData()
kernel_tables(metadata)


class ImagesUnitOfWork(UnitOfWork):
    """One transaction of the images service: its stores plus the outbox."""

    def open_stores(self, session: AsyncSession) -> None:
        pass
