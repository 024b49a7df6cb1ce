import { afterAll, describe, expect, it } from "vitest";
import { openDatabase } from "../services/platform/database.js";
import { modules } from "../services/modules.js";
import { createDatabase, dropDatabase } from "./databases.js";

const name = `boxoffice_migrations_${process.pid}_${Date.now().toString(36)}`;
afterAll(() => dropDatabase(name));

describe("committed migrations", () => {
  it.each(modules.filter((m) => m.database).map((m) => [m.name, m] as const))(
    "bring an empty %s schema exactly to its entities, applied once by three instances starting together",
    async (_name, module) => {
      const url = await createDatabase(name);
      const opened = await Promise.all([1, 2, 3].map(() => openDatabase(module.database!, { url, poolSize: 2 })));
      try {
        const orm = opened[0]!;
        const diff = await orm.schema.getUpdateSchemaSQL({ wrap: false, schema: module.database!.schema });
        // The ORM does not know the migrator's own bookkeeping table; everything else must match.
        const drift = diff.split("\n").filter((line) => line.trim() !== "" && !line.includes("mikro_orm_migrations"));
        expect(drift).toEqual([]);
        expect(await orm.migrator.getPending()).toEqual([]);
        const executed = await orm.migrator.getExecuted();
        expect(executed.map((m) => m.name)).toEqual(module.database!.migrations.map((m) => m.name));
      } finally {
        await Promise.all(opened.map((orm) => orm.close()));
      }
    },
  );
});
